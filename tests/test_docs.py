"""The docs hold together: every relative link in README.md and docs/*.md resolves, every module of the
package is named in docs/architecture.md (so the module map cannot fall behind the code), every file, name
and notebook that architecture.md and paper-to-code.md name exists, and each notebook the module map
assigns to a module uses it."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
DOCS = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def relative_links(path):
    """(target path relative to the repo root, line number) of every relative link in a markdown file."""
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)  # code is not links
    for lineno, line in enumerate(text.splitlines(), 1):
        for target in LINK.findall(line):
            if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # http:, https:, mailto:, in-page anchors
            file_part = target.split("#", 1)[0]
            resolved = (path.parent / file_part).resolve()
            yield resolved.relative_to(ROOT.resolve()).as_posix() if resolved.is_relative_to(ROOT.resolve()) \
                else str(resolved), lineno


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(doc):
    broken = [f"{doc.relative_to(ROOT)}:{n}: {t}" for t, n in relative_links(doc)
              if not (ROOT / t).exists()]
    assert not broken, "links to files that do not exist:\n" + "\n".join(broken)


def test_link_checker_finds_a_broken_link():
    """The checker itself can fail: a link to a missing file is reported; web links, anchors and code are not."""
    page = ROOT / "docs" / ".linkcheck-selftest.md"
    page.write_text("[ok](https://example.com) [bad](no-such-file.md) [anchor](#x) [up](../README.md#top)\n"
                    "```\n[in code](missing.md)\n```\n")
    try:
        links = [t for t, _ in relative_links(page)]
    finally:
        page.unlink()
    assert links == ["docs/no-such-file.md", "README.md"]


def test_every_module_is_in_architecture_md():
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    modules = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "minclip").rglob("*.py"))
    assert modules
    missing = [m for m in modules if f"`{m}`" not in text]
    assert not missing, f"docs/architecture.md does not name these modules (write them as `path`): {missing}"


def test_every_notebook_is_linked_from_the_index():
    index = {t for t, _ in relative_links(ROOT / "docs" / "index.md")}
    notebooks = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    missing = [n for n in notebooks if n not in index]
    assert not missing, f"docs/index.md does not link these notebooks: {missing}"


# ----------------------------------------------------------------------------- the docs name what exists
CODE_DOCS = [ROOT / "docs" / "paper-to-code.md", ROOT / "docs" / "architecture.md"]
NAME = re.compile(r"^[A-Za-z_]\w*(?:\.\w+)*(?:\(\))?$")
FILE = re.compile(r"^[\w./*-]+\.(?:py|json|md|ipynb|gz|npz)$")


def _modules():
    """{dotted module name: module} for every module of the package."""
    import importlib
    names = [".".join(p.relative_to(ROOT).with_suffix("").parts) for p in (ROOT / "minclip").rglob("*.py")]
    return {n.removesuffix(".__init__"): importlib.import_module(n.removesuffix(".__init__")) for n in names}


def _resolver():
    """A function name -> bool: does `name` ("clip_loss", "loss.clip_loss", "CLIP.logit_scale", "train_step",
    "visual.transformer.resblocks.0.attn.in_proj_weight", "TrainConfig.batch_size", "MINCLIP_BACKEND",
    a notebook's exercise such as "my_clip_loss") exist in minclip? Attributes that modules set in __init__
    are looked up on built tiny-vit and tiny-rn models; single words may also be an argument or a local
    variable of a minclip function (Figure 3's `I_e` in clip_loss), a config key, a `minclip` subcommand or
    an attribute of any minclip class."""
    import builtins
    import inspect
    import json

    import nbformat

    from minclip.cli import build_parser
    from minclip.model import create_model
    modules = _modules()
    roots = {}
    for dotted, module in modules.items():
        roots.setdefault(dotted.split(".")[-1], module)
        for k, v in vars(module).items():
            roots.setdefault(k, v)
    models = [create_model("tiny-vit"), create_model("tiny-rn")]
    instance_attrs = {}
    for m in models:
        for _, sub in [("", m)] + list(m.named_modules()):
            instance_attrs.setdefault(type(sub).__name__, set()).update(vars(sub))
            instance_attrs[type(sub).__name__].update(name.split(".")[0] for name, _ in sub.named_parameters())
    words = {k for path in (ROOT / "minclip" / "configs").glob("*.json") for k in json.loads(path.read_text())}
    words |= {a for attrs in instance_attrs.values() for a in attrs} | set(dir(builtins))
    for module in modules.values():
        source = inspect.getsource(module)
        words |= set(re.findall(r"\bMINCLIP_[A-Z_]+\b", source))
        for v in vars(module).values():
            if inspect.isclass(v) and v.__module__ == module.__name__:
                words |= set(vars(v))
        for fn in [v for v in vars(module).values() if inspect.isfunction(v)] + \
                  [f for c in vars(module).values() if inspect.isclass(c) for f in vars(c).values()
                   if inspect.isfunction(f)]:
            if fn.__module__ == module.__name__:
                words |= set(fn.__code__.co_varnames)
    subcommands = build_parser()._subparsers._group_actions[0].choices
    words |= set(subcommands)
    for path in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"):
        for cell in nbformat.read(path, as_version=4).cells:
            words |= set(re.findall(r"^def (\w+)", cell.source, flags=re.M)) if cell.cell_type == "code" else set()

    def walk(obj, parts):
        for part in parts:
            if isinstance(obj, type) and part in instance_attrs.get(obj.__name__, ()):
                return True  # set in __init__: CLIP.logit_scale, VisionTransformer.proj, ...
            child = getattr(obj, part, None)
            if child is None and part.isdigit() and hasattr(obj, "__getitem__"):
                child = obj[int(part)]
            if child is None:
                return False
            obj = child
        return True

    def exists(name):
        parts = name.removesuffix("()").split(".")
        if parts[0] in roots and walk(roots[parts[0]], parts[1:]):
            return True
        if any(walk(m, parts) for m in models):  # a state_dict key or a submodule path
            return True
        return len(parts) == 1 and parts[0] in words
    return exists


def _code_spans(path):
    """Every `inline code` span of a markdown file (fenced blocks dropped)."""
    text = re.sub(r"```.*?```", " ", path.read_text(encoding="utf-8"), flags=re.S)
    return [s.strip() for s in re.findall(r"`([^`]+)`", text)]


@pytest.mark.parametrize("doc", CODE_DOCS, ids=lambda p: p.name)
def test_every_file_function_and_notebook_a_code_doc_names_exists(doc):
    """paper-to-code.md and architecture.md: every file, every name written alone as code (`clip_loss`,
    `CLIP.logit_scale`) and every notebook they name exists, so neither can describe code that is gone.
    Spans with spaces or operators (formulas, Figure 3's pseudocode), OpenAI's `clip/...` files and names
    under `torch.` or `np.` are not minclip's and are not looked up; neither are one- and two-letter symbols."""
    exists = _resolver()
    missing = []
    for token in _code_spans(doc):
        if token.endswith((".png", ".jsonl", ".txt")):
            continue  # what a run writes (metrics.jsonl, similarity.png), not files of the repository
        if FILE.match(token) and not token.startswith("clip/"):
            found = list(ROOT.glob(token)) + list((ROOT / "minclip").glob(token)) + list(ROOT.rglob(token))
            if not found:
                missing.append(f"file {token}")
        elif NAME.match(token) and len(token) > 2 and not token.startswith(("torch.", "np.", "clip.")):
            if not exists(token):
                missing.append(f"name {token}")
    text = doc.read_text(encoding="utf-8")
    numbers = {m for group in re.findall(r"notebooks? ((?:\d\d(?:, | and )?)+)", text)
               for m in re.findall(r"\d\d", group)}
    present = {p.name[:2] for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    missing += [f"notebook {n}" for n in sorted(numbers - present)]
    assert not missing, f"{doc.name} names what does not exist:\n  " + "\n  ".join(missing)


def test_the_name_checker_can_fail():
    exists = _resolver()
    assert exists("clip_loss") and exists("loss.clip_loss") and exists("CLIP.logit_scale")
    assert exists("visual.transformer.resblocks.0.attn.in_proj_weight") and exists("TrainConfig.batch_size")
    assert not exists("clip_loss_v2") and not exists("CLIP.temperature") and not exists("visual.resblocks.9")


def test_each_notebook_of_the_module_map_reads_its_module():
    """The module map's last column says which notebook reads each module: that notebook's code must use the
    module (import it, or call a name it defines)."""
    import nbformat
    modules = _modules()
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    unread, rows = [], 0
    for path, column in re.findall(r"^\| `(minclip/[\w/]+\.py)` \|.*\| ([^|]*) \|$", text, flags=re.M):
        dotted = path.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
        module = modules[dotted]
        defined = [k for k, v in vars(module).items() if not k.startswith("_")
                   and getattr(v, "__module__", None) == dotted]
        used = re.compile(rf"\b{re.escape(dotted)}\b|\b(?:{'|'.join(map(re.escape, defined)) or '$^'})\b")
        for number in re.findall(r"\b(\d\d)\b", column.split("[")[0]):
            rows += 1
            (nb_path,) = (ROOT / "notebooks").glob(f"{number}_*.ipynb")
            code = "\n".join(c.source for c in nbformat.read(nb_path, as_version=4).cells if c.cell_type == "code")
            if not used.search(code):
                unread.append(f"{path} -> notebook {number}")
    assert rows >= 20, f"only {rows} module-notebook pairs found: has the module map's format changed?"
    assert not unread, "the module map says these notebooks read these modules, but their code does not:\n  " + \
        "\n  ".join(unread)
