"""One training step of a tiny model, distributed or as the single-process reference (test_distributed.py).

    mpiexec -n K python -m mpi4py tests/mpi_scripts/one_step.py MODEL B OUT    # rank r writes OUT.r.npz
    python tests/mpi_scripts/one_step.py MODEL B OUT --reference K             # writes OUT.ref.npz

Both draw the same global batch of B pairs (float64, so the comparison is exact to rounding). The
distributed run gives rank r rows [r*B/K, (r+1)*B/K). The reference encodes the images in K chunks of
B/K, one forward each, which is what K ranks with BatchNorm statistics local to each rank compute
(PyTorch's DDP without SyncBatchNorm); for a ViT (no BatchNorm) chunking changes nothing, so the
reference encodes the whole batch at once. It also records the running statistics a fresh model gets
from each chunk alone: rank r's buffers must equal chunk r's, i.e. they stay local.
"""
import copy
import sys

import numpy as np

from minclip import autograd, backend
from minclip import distributed as dist
from minclip.loss import clip_loss, clip_loss_global
from minclip.model import create_model
from minclip.optim import AdamW, param_groups_for_clip

name, B, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
K = int(sys.argv[5]) if "--reference" in sys.argv else dist.world_size()
backend.set_default_dtype(np.float64)
backend.manual_seed(0)
model = create_model(name)
if dist.rank() == 1:  # a different init on rank 1: broadcast_model must overwrite it with rank 0's
    for p in model.parameters():
        p.data = p.data + 1.0
dist.broadcast_model(model)
initial = copy.deepcopy(model)
rng = np.random.default_rng(1)
n_px = model.visual.input_resolution
images = rng.standard_normal((B, 3, n_px, n_px))
tokens = rng.integers(1, model.vocab_size - 1, (B, 8))
tokens[:, -1] = model.vocab_size - 1  # EOT (the highest id) ends every caption
opt = AdamW(param_groups_for_clip(model, 0.1), lr=1e-2)
model.train()

n = B // K
if "--reference" in sys.argv:
    has_bn = any("bn" in k for k in model.state_dict())
    chunks = [images[i * n:(i + 1) * n] for i in range(K)] if has_bn else [images]
    image_features = autograd.concat([model.encode_image(c) for c in chunks], axis=0) if has_bn else \
        model.encode_image(images)
    loss = clip_loss(image_features, model.encode_text(tokens), model.logit_scale)
    value = float(loss.data)
    loss.backward()
    tag = "ref"
else:
    r = dist.rank()
    loss = clip_loss_global(model.encode_image(images[r * n:(r + 1) * n]), model.encode_text(tokens[r * n:(r + 1) * n]),
                            model.logit_scale)
    value = dist.average_scalar(float(loss.data))
    loss.backward()
    dist.average_gradients(model.parameters())
    tag = str(r)
grads = {f"grad/{k}": backend.to_numpy(p.grad) for k, p in model.named_parameters()}
opt.step()
result = {"loss": np.array(value), **grads, **{f"after/{k}": v for k, v in model.state_dict().items()}}
if "--reference" in sys.argv:
    for i in range(K):  # the running statistics of a fresh model that saw chunk i alone
        m = copy.deepcopy(initial)
        m.train()
        with autograd.no_grad():
            m.encode_image(images[i * n:(i + 1) * n])
        result.update({f"local{i}/{k}": v for k, v in m.state_dict().items() if "running" in k})
np.savez(f"{out}.{tag}.npz", **result)
