"""Weight files written by hand in the layouts torch, TorchScript and Hugging Face use, without torch:
the tests of minclip.readers make their files with these (test_pretrained.py, test_hostile_checkpoints.py)."""
import io
import os
import pickle
import zipfile
from collections import OrderedDict

import numpy as np

STORAGE_NAMES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float16): "HalfStorage",
                 np.dtype(np.float64): "DoubleStorage", np.dtype(np.int64): "LongStorage",
                 np.dtype(np.uint16): "BFloat16Storage"}  # the tests write bfloat16 as its raw uint16 bits


# ----------------------------------------------------------------------------- writing torch's layout by hand
class Global:
    """Pickles as the opcode GLOBAL 'module name' (a reference to torch code we do not have)."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self):  # save_reduce wants a callable
        raise AssertionError("never called")


class ScriptNode:
    """A module of a TorchScript archive: pickled as GLOBAL __torch__.<cls>, NEWOBJ, BUILD {attributes}."""

    def __init__(self, cls, attributes):
        self.cls, self.attributes = cls, attributes


class TorchPickler(pickle._Pickler):
    """The pure-Python pickler, taught torch.save's encoding of tensors (storages as persistent ids)."""

    def __init__(self, f):
        super().__init__(f, protocol=2)
        self.storages = []  # raw bytes of data/0, data/1, ...

    def save(self, obj, save_persistent_id=True):
        if isinstance(obj, Global):
            return self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        if isinstance(obj, ScriptNode):
            self.save(Global(*obj.cls.rsplit(".", 1)))
            self.write(pickle.EMPTY_TUPLE + pickle.NEWOBJ)
            self.save(obj.attributes)
            return self.write(pickle.BUILD)
        return super().save(obj, save_persistent_id)

    def persistent_id(self, obj):
        if isinstance(obj, tuple) and len(obj) == 3 and obj[0] == "__storage__":
            return ("storage", Global("torch", STORAGE_NAMES[obj[2].dtype]), str(obj[1]), "cpu", obj[2].size)
        return None

    def reducer_override(self, obj):
        if not isinstance(obj, np.ndarray):
            return NotImplemented
        obj = obj.copy(order="C")  # (np.ascontiguousarray would make a 0-d array 1-d)
        self.storages.append(obj.tobytes())
        storage = ("__storage__", len(self.storages) - 1, obj.reshape(-1))
        stride = tuple(s // obj.itemsize for s in obj.strides)
        return (Global("torch._utils", "_rebuild_tensor_v2"),
                (storage, 0, tuple(obj.shape), stride, False, OrderedDict()))


def write_torch_zip(path, obj, top="archive", extra=None):
    """torch.save's zip layout: <top>/data.pkl, <top>/data/<key>, <top>/version, <top>/byteorder."""
    buf = io.BytesIO()
    pickler = TorchPickler(buf)
    pickler.dump(obj)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{top}/data.pkl", buf.getvalue())
        zf.writestr(f"{top}/byteorder", "little")
        for key, raw in enumerate(pickler.storages):
            zf.writestr(f"{top}/data/{key}", raw)
        zf.writestr(f"{top}/version", "3\n")
        for name, text in (extra or {}).items():
            zf.writestr(f"{top}/{name}", text)
    return path


def write_script_archive(path, state_dict, other_tensors=None):
    """A TorchScript-like archive: the module tree as __torch__ objects, the classes' parameter lists
    in code/__torch__/tree.py, constants.pkl. `other_tensors` are tensor attributes that are neither
    parameters nor buffers (as a scripted attn_mask) and must not end up in the state_dict."""
    tree = {}
    for key, value in list(state_dict.items()) + list((other_tensors or {}).items()):
        *parents, leaf = key.split(".")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    classes = []

    def to_node(name, d):
        cls = f"Node{len(classes)}"
        classes.append(None)
        attributes = {"training": False}
        params = []
        for k, v in d.items():
            if isinstance(v, dict):
                attributes[k] = to_node(k, v)
            else:
                attributes[k] = v
                params.append(k)
        classes[int(cls[4:])] = (cls, params)
        return ScriptNode(f"__torch__.tree.{cls}", attributes)

    root = to_node("", tree)
    other = {k.rsplit(".", 1)[-1] for k in (other_tensors or {})}
    code = ""
    for cls, params in classes:  # the class header torch.jit.save writes into code/
        listed = "".join(f'"{p}", ' for p in params if p not in other)
        code += f"class {cls}(Module):\n  __parameters__ = [{listed}]\n  __buffers__ = []\n  training : bool\n"
    return write_torch_zip(path, root, top=os.path.basename(path)[:-3],
                           extra={"code/__torch__/tree.py": code, "constants.pkl": pickle.dumps(())})


def to_hf(sd):
    """OpenAI state_dict -> Hugging Face CLIPModel names (the inverse of pretrained.from_hf)."""
    hf = {}
    block = {"attn.out_proj.": "self_attn.out_proj.", "ln_1.": "layer_norm1.", "ln_2.": "layer_norm2.",
             "mlp.c_fc.": "mlp.fc1.", "mlp.c_proj.": "mlp.fc2."}
    for key, v in sd.items():
        for tower, hf_tower in (("visual.transformer.resblocks.", "vision_model.encoder.layers."),
                                ("transformer.resblocks.", "text_model.encoder.layers.")):
            if key.startswith(tower):
                layer, rest = key[len(tower):].split(".", 1)
                if rest.startswith("attn.in_proj_"):
                    kind = rest.rsplit("_", 1)[1]
                    for name, part in zip("qkv", np.split(v, 3, axis=0)):
                        hf[f"{hf_tower}{layer}.self_attn.{name}_proj.{kind}"] = part
                else:
                    old = next(o for o in block if rest.startswith(o))
                    hf[f"{hf_tower}{layer}.{block[old]}{rest[len(old):]}"] = v
                break
        else:
            hf[{"token_embedding.weight": "text_model.embeddings.token_embedding.weight",
                "positional_embedding": "text_model.embeddings.position_embedding.weight",
                "ln_final.weight": "text_model.final_layer_norm.weight",
                "ln_final.bias": "text_model.final_layer_norm.bias",
                "visual.class_embedding": "vision_model.embeddings.class_embedding",
                "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
                "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
                "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
                "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
                "visual.ln_post.weight": "vision_model.post_layernorm.weight",
                "visual.ln_post.bias": "vision_model.post_layernorm.bias",
                "logit_scale": "logit_scale"}.get(key, key)] = v
    hf["visual_projection.weight"] = np.ascontiguousarray(hf.pop("visual.proj").T)
    hf["text_projection.weight"] = np.ascontiguousarray(hf.pop("text_projection").T)
    hf["text_model.embeddings.position_ids"] = np.arange(sd["positional_embedding"].shape[0])[None]
    hf["vision_model.embeddings.position_ids"] = np.arange(sd["visual.positional_embedding"].shape[0])[None]
    return hf
