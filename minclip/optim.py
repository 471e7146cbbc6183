"""Optimizers, the learning-rate schedule and gradient clipping used to train CLIP.

CLIP (Radford et al., 2021, section 2.5) trains with Adam with decoupled weight
decay (AdamW, Loshchilov & Hutter, 2019) applied to every weight except gains
and biases, a cosine learning-rate schedule, beta2 = 0.98 and eps = 1e-6.
The update rules follow torch.optim exactly (tests compare with it), and the
grouping and schedule follow open_clip (src/training/main.py, scheduler.py).

Every update is in-place array math on `p.data` through `xp = get_array_module(p.data)`,
so the same code runs on NumPy and CuPy. Gradients are only read, never written in
place: the autograd may hand two leaves the same gradient array (`a + b` gives both `g`).
"""
import math

import numpy as np

from . import backend, parallel
from .autograd import Tensor


class Optimizer:
    """Base class: parameter groups, `zero_grad`, `step` and a state_dict, like torch.optim.

    params: an iterable of Parameters, or of dicts `{"params": [...], "weight_decay": 0.0, ...}`
    whose entries override `defaults` for that group. Every group is a dict with all
    hyper-parameters (including "lr") in `self.param_groups`; a schedule changes them there.
    Per-parameter state (momentum, Adam moments) lives in `self.state[id(p)]`.
    """
    def __init__(self, params, defaults):
        if isinstance(params, Tensor):
            raise TypeError("optimizer params must be an iterable of Parameters or of dicts, not a single Tensor")
        groups = list(params)
        if groups and not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.defaults = dict(defaults)
        self.param_groups = []
        self.state = {}  # id(parameter) -> dict of its state
        seen = set()
        for g in groups:
            group = {**self.defaults, **g, "params": list(g["params"])}
            for p in group["params"]:
                if not isinstance(p, Tensor):
                    raise TypeError(f"optimizer can only optimize Parameters, got {type(p).__name__}")
                if id(p) in seen:
                    raise ValueError("a parameter appears in more than one parameter group (or twice in one)")
                seen.add(id(p))
            self.param_groups.append(group)
        if not seen:
            raise ValueError("optimizer got an empty parameter list")

    def parameters(self):
        """All parameters in group order: the positions used by state_dict."""
        return [p for group in self.param_groups for p in group["params"]]

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def step(self):
        """Update every parameter that has a gradient (those with `.grad is None` are skipped).
        The updates are independent, so the threads of parallel.py share them out."""
        todo = [(p, self.state.setdefault(id(p), {}), group)
                for group in self.param_groups for p in group["params"] if p.grad is not None]
        if todo:
            parallel.for_items(lambda item: self.update(item[0], item[0].grad, *item[1:]), todo,
                               [p.data.size for p, _, _ in todo], todo[0][0].data)

    def update(self, p, grad, state, group):
        """Subclasses: change `p.data` in place from `grad` (raw array), `state` and hyper-parameters."""
        raise NotImplementedError

    # --- saving and loading
    def state_dict(self):
        """{"state": [one dict per parameter, in group order], "param_groups": [hyper-parameters]}.

        Arrays are NumPy host copies. Unlike torch, "state" is a list (not a dict keyed by
        position) so it survives the JSON part of a checkpoint; parameters without state get {}.
        Each group's "params" holds the positions of its parameters.
        """
        state = [{k: backend.to_numpy(v).copy() if backend.is_array(v) else v
                  for k, v in self.state.get(id(p), {}).items()} for p in self.parameters()]
        groups, start = [], 0
        for group in self.param_groups:
            n = len(group["params"])
            hyper = {k: v for k, v in group.items() if k != "params"}
            groups.append({**hyper, "params": list(range(start, start + n))})
            start += n
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore hyper-parameters and per-parameter state saved by `state_dict()`.

        Checks the number of groups, of parameters per group, parameter names (when both
        sides have "param_names") and every state array's shape before changing anything;
        raises ValueError naming the mismatch. Arrays move to the backend of each parameter.
        """
        groups, states = state_dict["param_groups"], state_dict["state"]
        params = self.parameters()
        if len(groups) != len(self.param_groups):
            raise ValueError(f"load_state_dict: the state_dict has {len(groups)} parameter groups "
                             f"but the optimizer has {len(self.param_groups)}")
        for i, (saved, group) in enumerate(zip(groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"load_state_dict: group {i} has {len(saved['params'])} parameters in the "
                                 f"state_dict but {len(group['params'])} in the optimizer")
            a, b = saved.get("param_names"), group.get("param_names")
            if a is not None and b is not None and list(a) != list(b):
                k = next(j for j, (x, y) in enumerate(zip(a, b)) if x != y)
                raise ValueError(f"load_state_dict: group {i} parameter {k} is {a[k]!r} in the state_dict "
                                 f"but {b[k]!r} in the optimizer")
        if len(states) != len(params):
            raise ValueError(f"load_state_dict: the state_dict has state for {len(states)} parameters "
                             f"but the optimizer has {len(params)}")
        for i, (s, p) in enumerate(zip(states, params)):
            for k, v in s.items():
                if backend.is_array(v) and tuple(v.shape) != tuple(p.shape):
                    raise ValueError(f"load_state_dict: state {k!r} of parameter {i} has shape {tuple(v.shape)} "
                                     f"but the parameter has shape {tuple(p.shape)}")
        for saved, group in zip(groups, self.param_groups):
            group.update({k: tuple(v) if k == "betas" else v for k, v in saved.items() if k != "params"})
        self.state = {}
        for s, p in zip(states, params):
            xp = backend.get_array_module(p.data)
            # xp.array copies: later in-place updates must not write into the caller's dict
            self.state[id(p)] = {k: xp.array(v, dtype=p.dtype) if backend.is_array(v) else v
                                 for k, v in s.items()}


def _check(name, value, ok):
    if not ok:
        raise ValueError(f"invalid {name}: {value}")


class SGD(Optimizer):
    """Stochastic gradient descent with momentum and coupled L2 weight decay (torch.optim.SGD, dampening 0).

        g = grad + weight_decay * p
        b = g (first step), else momentum * b + g
        g = g + momentum * b  (nesterov)  or  b  (momentum > 0)
        p = p - lr * g
    """
    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        _check("lr", lr, lr >= 0)
        _check("momentum", momentum, momentum >= 0)
        _check("weight_decay", weight_decay, weight_decay >= 0)
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay))

    def update(self, p, grad, state, group):
        lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
        if wd:
            grad = grad + wd * p.data  # a new array: p.grad itself stays untouched
        if momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = grad.copy()
            else:
                buf *= momentum
                buf += grad
            grad = grad + momentum * buf if group["nesterov"] else buf
        p.data -= lr * grad


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with coupled L2 weight decay, as torch.optim.Adam.

        g = grad + weight_decay * p
        m = beta1 * m + (1 - beta1) * g             (first moment)
        v = beta2 * v + (1 - beta2) * g^2           (second moment)
        p = p - lr / (1 - beta1^t) * m / (sqrt(v / (1 - beta2^t)) + eps)

    The bias corrections 1 - beta^t undo the moments' start at zero.
    """
    decoupled = False  # AdamW: decay the weights directly instead of adding to the gradient

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        _check("lr", lr, lr >= 0)
        _check("betas", betas, len(betas) == 2 and all(0 <= b < 1 for b in betas))
        _check("eps", eps, eps >= 0)
        _check("weight_decay", weight_decay, weight_decay >= 0)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def update(self, p, grad, state, group):
        xp = backend.get_array_module(p.data)
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        if not state:
            state.update(step=0, exp_avg=xp.zeros_like(p.data), exp_avg_sq=xp.zeros_like(p.data))
        state["step"] += 1
        t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
        if wd and self.decoupled:
            p.data *= 1 - lr * wd
        elif wd:
            grad = grad + wd * p.data
        # in place, with one scratch array: each line is one pass over the parameter
        scratch = xp.empty_like(m)
        xp.multiply(grad, 1 - beta1, out=scratch)
        m *= beta1
        m += scratch                                     # m = beta1 m + (1 - beta1) g
        xp.multiply(grad, grad, out=scratch)
        scratch *= 1 - beta2
        v *= beta2
        v += scratch                                     # v = beta2 v + (1 - beta2) g^2
        xp.sqrt(v, out=scratch)
        scratch /= math.sqrt(1 - beta2 ** t)
        scratch += eps                                   # the denominator
        xp.divide(m, scratch, out=scratch)
        scratch *= lr / (1 - beta1 ** t)
        p.data -= scratch


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019), as torch.optim.AdamW.

        p = p - lr * weight_decay * p               (before the Adam step, on the weights, not on g)
        then the Adam update above with g = grad.

    Defaults are CLIP's training settings: betas (0.9, 0.98), eps 1e-6, weight decay 0.2.
    """
    decoupled = True

    def __init__(self, params, lr=5e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


# ----------------------------------------------------------------------------- CLIP's parameter groups
def _no_decay(name, p):
    """open_clip's rule: gains, biases and logit_scale get no weight decay; we add embeddings."""
    return (p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name
            or "embedding" in name or "logit_scale" in name)


def param_groups_for_clip(model, weight_decay):
    """Two parameter groups: weights with decay, and "gains, biases, embeddings and logit_scale" without.

    A trainable parameter goes to the no-decay group when ndim < 2 (LayerNorm/BatchNorm gains,
    biases, logit_scale) or its name contains "bn", "ln", "bias", "embedding" or "logit_scale"
    (open_clip's rule, src/training/main.py, plus embeddings: token_embedding.weight,
    positional_embedding, class_embedding). Everything else -- Linear/Conv/attention weights,
    visual.proj, text_projection -- is decayed. Each group carries "param_names" for reading
    and for checking a loaded optimizer state.
    """
    decay, no_decay = ([], []), ([], [])
    for name, p in model.named_parameters():
        if p.requires_grad:
            params, names = no_decay if _no_decay(name, p) else decay
            params.append(p)
            names.append(name)
    return [{"params": decay[0], "param_names": decay[1], "weight_decay": weight_decay},
            {"params": no_decay[0], "param_names": no_decay[1], "weight_decay": 0.0}]


# ----------------------------------------------------------------------------- learning-rate schedule
def cosine_lr(step, base_lr, warmup_steps, total_steps):
    """Learning rate at `step` (0-based): linear warm-up, then cosine decay to 0 (open_clip's).

        step < warmup:  base_lr * (step + 1) / warmup_steps
        afterwards:     0.5 * (1 + cos(pi * e / es)) * base_lr,  e = step - warmup, es = total - warmup

    Past `total_steps` the rate stays 0 (open_clip never asks; the cosine would rise again).
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    e, es = step - warmup_steps, total_steps - warmup_steps
    frac = min(e / es, 1.0) if es > 0 else 1.0
    return 0.5 * (1 + math.cos(math.pi * frac)) * base_lr


class CosineSchedule:
    """Sets every group's lr to `cosine_lr(step, ...)`; a pure function of the step, so no state to save.

        schedule = CosineSchedule(optimizer, 5e-4, warmup_steps=2000, total_steps=len(loader) * epochs)
        lr = schedule.step(step)  # before optimizer.step()
    """
    def __init__(self, optimizer, base_lr, warmup_steps, total_steps):
        if warmup_steps < 0 or total_steps < 1:
            raise ValueError(f"CosineSchedule: need warmup_steps >= 0 and total_steps >= 1, "
                             f"got {warmup_steps} and {total_steps}")
        self.optimizer, self.base_lr = optimizer, base_lr
        self.warmup_steps, self.total_steps = warmup_steps, total_steps

    def step(self, step):
        lr = cosine_lr(step, self.base_lr, self.warmup_steps, self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr


# ----------------------------------------------------------------------------- gradient clipping
def clip_grad_norm_(params, max_norm):
    """Scale all gradients together so their global L2 norm is at most `max_norm`; returns that norm
    (before clipping) as a 0-d array on the gradients' device, like torch.nn.utils.clip_grad_norm_.

    Everything stays on the device: the scale is min(1, max_norm / norm), computed and applied there,
    so a GPU never waits for the host. A NaN or infinite norm scales nothing (the caller, which reads
    the loss, stops the run). Parameters without a gradient are skipped. The scaled gradient is a new
    array: gradients may be shared between parameters, so scaling in place could hit one twice.
    """
    params = [params] if isinstance(params, Tensor) else params
    unique = {id(p): p for p in params if p.grad is not None}
    grads = [p.grad for p in unique.values()]
    if not grads:
        return np.zeros((), np.float32)
    xp = backend.get_array_module(grads[0])
    # norm of the per-parameter norms, summed in at least float32 (fp16 squares overflow)
    norms = [xp.linalg.norm(g.ravel().astype(np.promote_types(g.dtype, np.float32), copy=False)) for g in grads]
    total = xp.linalg.norm(xp.stack(norms))                                          # 0-d, on the device
    clip = xp.isfinite(total) & (total > max_norm)
    if xp is np and not clip:  # on the host the answer is free to read: skip a pass that multiplies by 1
        return total
    scale = xp.where(clip, max_norm / (total + 1e-6), 1.0)                           # torch's epsilon
    for p in unique.values():
        p.grad = p.grad * scale.astype(p.grad.dtype)
    return total
