"""Gradient checks (float64) for every layer in minclip.nn and every CLIP block, w.r.t. inputs and
parameters; plus the shapes, state_dict keys and a few properties of the blocks.

Small layers are checked element by element; big blocks along random directions (gradcheck
switches to that mode above max_elements), as Chainer's gradient checker does."""
from collections import OrderedDict

import numpy as np
import pytest
from _helpers import cupy_usable, host

from minclip import backend, nn, strict
from minclip import functional as F
from minclip.autograd import Tensor
from minclip.gradcheck import gradcheck
from minclip.resnet import AttentionPool2d, Bottleneck, ModifiedResNet
from minclip.transformer import ResidualAttentionBlock, Transformer, VisionTransformer


@pytest.fixture(autouse=True)
def float64():
    backend.manual_seed(0)
    with backend.default_dtype(np.float64):
        yield


def rand(*shape, seed=0):
    return Tensor(backend.asarray(np.random.default_rng(seed).standard_normal(shape)), requires_grad=True)


def check(module, *inputs, **kw):
    """Gradcheck `module(*inputs)` w.r.t. the float inputs and all the module's parameters."""
    params = module.parameters()
    assert params or any(isinstance(x, Tensor) and x.requires_grad for x in inputs)
    return gradcheck(module, inputs, params=params, **kw)


def arrays_of(module):
    """Every parameter, gradient and buffer array of `module`."""
    out = [p.data for p in module.parameters()] + [p.grad for p in module.parameters() if p.grad is not None]
    return out + [getattr(m, name) for _, m, name in module.named_buffers() if getattr(m, name) is not None]


def small_net():
    """Linear, BatchNorm2d (int and float buffers) and a masked attention block, with gradients."""
    net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm2d(3),
                        ResidualAttentionBlock(8, 2, attn_mask=F.causal_mask(6, dtype=np.float64)))
    for p in net.parameters():
        p.grad = backend.get_array_module(p.data).ones_like(p.data)
    return net


# ----------------------------------------------------------------------------- Module.to
class TestModuleTo:
    def test_to_numpy_moves_data_and_leaves_the_default_backend(self):
        net, before = small_net(), (backend.current(), backend.xp)
        assert net.to("numpy") is net
        assert (backend.current(), backend.xp) == before
        assert all(type(a) is np.ndarray for a in arrays_of(net))
        # a forward pass follows the parameters, whatever the default backend is
        y = net[2](Tensor(np.random.default_rng(0).standard_normal((1, 4, 8))))
        assert type(y.data) is np.ndarray

    def test_to_cupy_without_a_gpu_raises_and_changes_nothing(self):
        if cupy_usable():
            pytest.skip("CuPy and a GPU are usable here")
        net, before = small_net(), backend.current()
        arrays = arrays_of(net)
        with pytest.raises(backend.BackendError, match="cupy"):
            net.to("cupy")
        assert backend.current() == before
        assert all(a is b for a, b in zip(arrays_of(net), arrays, strict=True))

    @pytest.mark.skipif(not cupy_usable(), reason="needs CuPy and a GPU")
    def test_to_cupy_and_back_leaves_the_default_backend(self):
        net, before = small_net(), backend.current()
        net.to("cupy")
        assert backend.current() == before
        assert all(backend.get_array_module(a) is backend.cupy for a in arrays_of(net))
        y = net[2](Tensor(backend.cupy.asarray(np.ones((1, 4, 8)))))
        assert backend.get_array_module(y) is backend.cupy
        net.load_state_dict(net.state_dict())  # host arrays in, loaded where the model is
        assert all(backend.get_array_module(a) is backend.cupy for a in arrays_of(net))
        net.to("numpy")
        assert all(type(a) is np.ndarray for a in arrays_of(net)) and backend.current() == before

    def test_to_dtype_casts_floating_parameters_grads_and_buffers_only(self):
        net = small_net().to(np.float32)
        assert {a.dtype for a in arrays_of(net)} == {np.dtype(np.float32), np.dtype(np.int64)}
        assert net[1].num_batches_tracked.dtype == np.int64 and net[2].attn_mask.dtype == np.float32
        assert net.to("float64")[0].weight.grad.dtype == np.float64

    def test_to_an_unknown_target_names_both_kinds(self):
        net = small_net()
        with pytest.raises(ValueError, match=r"'cuda' is neither a backend \('numpy', 'cupy', 'strict'\) nor a dtype"):
            net.to("cuda")


# ----------------------------------------------------------------------------- nn layers
class TestLayers:
    def test_linear(self):
        check(nn.Linear(5, 3), rand(2, 4, 5))

    def test_linear_no_bias(self):
        lin = nn.Linear(5, 3, bias=False)
        assert lin.bias is None and len(lin.parameters()) == 1
        check(lin, rand(4, 5))

    def test_layer_norm(self):
        ln = nn.LayerNorm(6)
        nn.normal_(ln.weight, 1.0), nn.normal_(ln.bias, 1.0)
        check(ln, rand(2, 3, 6))

    @pytest.mark.parametrize("stride,padding", [(1, 0), (1, 1), (2, 1), (3, 0)])
    def test_conv2d(self, stride, padding):
        check(nn.Conv2d(2, 3, 3, stride=stride, padding=padding), rand(2, 2, 6, 6))

    def test_conv2d_patchify_no_bias(self):
        conv = nn.Conv2d(3, 4, 2, stride=2, bias=False)
        assert conv.bias is None
        check(conv, rand(2, 3, 4, 4))

    def test_batch_norm_train(self):
        bn = nn.BatchNorm2d(3)
        nn.normal_(bn.weight, 1.0), nn.normal_(bn.bias, 1.0)
        check(bn, rand(4, 3, 2, 2))

    def test_batch_norm_eval(self):
        bn = nn.BatchNorm2d(3).eval()
        bn.running_mean[:] = [0.5, -1.0, 2.0]
        bn.running_var[:] = [0.3, 2.0, 1.5]
        check(bn, rand(4, 3, 2, 2))
        x = rand(4, 3, 2, 2)
        mean, var = host(bn.running_mean), host(bn.running_var)
        ref = (host(x) - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5)
        np.testing.assert_allclose(host(bn(x)), ref)

    def test_batch_norm_running_stats(self):
        bn = nn.BatchNorm2d(2, momentum=0.1)
        x = rand(5, 2, 3, 3)
        bn(x)
        n = 5 * 3 * 3
        xh = host(x)
        np.testing.assert_allclose(host(bn.running_mean), 0.1 * xh.mean((0, 2, 3)))
        np.testing.assert_allclose(host(bn.running_var), 0.9 + 0.1 * xh.var((0, 2, 3)) * n / (n - 1))
        assert int(bn.num_batches_tracked) == 1

    @pytest.mark.parametrize("k,stride,padding", [(2, None, 0), (3, 1, 1), (2, 1, 0)])
    def test_avg_pool2d(self, k, stride, padding):
        check(nn.AvgPool2d(k, stride, padding), rand(2, 2, 4, 4))

    def test_embedding(self):
        emb = nn.Embedding(7, 4)
        ids = np.array([[1, 3, 3], [6, 0, 1]])  # repeated ids must add up; host ids, as the tokenizer gives
        check(emb, ids)
        np.testing.assert_array_equal(host(emb(ids)), host(emb.weight)[ids])
        np.testing.assert_array_equal(host(emb(backend.asarray(ids))), host(emb.weight)[ids])  # ids on the device

    def test_multihead_self_attention(self):
        check(nn.MultiheadAttention(8, 2), rand(2, 3, 8))

    def test_multihead_self_attention_causal_mask(self):
        mha = nn.MultiheadAttention(8, 2)
        mask = F.causal_mask(4, dtype=np.float64)
        gradcheck(lambda x: mha(x, attn_mask=mask), [rand(2, 4, 8)], params=mha.parameters())
        x = rand(1, 4, 8)
        np.testing.assert_allclose(host(mha(x[:, :2], attn_mask=mask[:2, :2])), host(mha(x, attn_mask=mask))[:, :2],
                                   rtol=1e-12)  # causal: a prefix of the input gives a prefix of the output

    def test_multihead_cross_attention_with_mask(self):
        mha = nn.MultiheadAttention(8, 2)
        mask = np.where(np.random.default_rng(1).random((3, 5)) < 0.3, -np.inf, 0.0)
        mask[:, 0] = 0  # every query sees at least one key
        mask = backend.asarray(mask)  # made on the host, moved to the parameters' backend
        q, kv = rand(2, 3, 8, seed=1), rand(2, 5, 8, seed=2)
        gradcheck(lambda q, kv: mha(q, kv, kv, attn_mask=mask), [q, kv], params=mha.parameters())

    def test_split_and_merge_heads(self):
        x = rand(2, 5, 6)
        heads = nn.split_heads(x, 3)                                    # (2, 3, 5, 2)
        assert heads.shape == (2, 3, 5, 2)
        np.testing.assert_array_equal(host(heads)[:, 1], host(x)[..., 2:4])  # head j: features j*d .. (j+1)*d
        np.testing.assert_array_equal(host(nn.merge_heads(heads)), host(x))
        gradcheck(lambda x: nn.merge_heads(nn.split_heads(x, 3) * 2), [x])

    def test_multihead_matches_separate_heads(self):
        """The packed projection and head split equal the textbook per-head loop."""
        mha = nn.MultiheadAttention(8, 2)
        x = rand(2, 3, 8).data
        xh = host(x)
        qkv = xh @ host(mha.in_proj_weight).T + host(mha.in_proj_bias)
        q, k, v = np.split(qkv, 3, axis=-1)
        heads = []
        for h in range(2):
            s = slice(4 * h, 4 * h + 4)
            a = q[..., s] @ k[..., s].swapaxes(1, 2) / 2.0
            a = np.exp(a - a.max(-1, keepdims=True))
            heads.append((a / a.sum(-1, keepdims=True)) @ v[..., s])
        ref = np.concatenate(heads, -1) @ host(mha.out_proj.weight).T + host(mha.out_proj.bias)
        np.testing.assert_allclose(host(mha(x)), ref, rtol=1e-12)

    def test_quick_gelu(self):
        act = nn.QuickGELU()
        check(act, rand(3, 4))
        x = rand(5).data
        xh = host(x)
        np.testing.assert_allclose(host(act(x)), xh / (1 + np.exp(-1.702 * xh)))

    def test_relu_gelu_identity(self):
        check(nn.ReLU(), Tensor(backend.asarray(np.array([-1.5, -0.2, 0.3, 2.0])), requires_grad=True))
        check(nn.GELU(), rand(3, 4))
        check(nn.Identity(), rand(3))

    def test_sequential(self):
        seq = nn.Sequential(OrderedDict([("fc", nn.Linear(4, 6)), ("act", nn.QuickGELU()),
                                         ("proj", nn.Linear(6, 2))]))
        assert list(seq.state_dict()) == ["fc.weight", "fc.bias", "proj.weight", "proj.bias"]
        check(seq, rand(3, 4))
        assert [k for k in nn.Sequential(nn.Linear(2, 2), nn.ReLU()).state_dict()] == ["0.weight", "0.bias"]


# ----------------------------------------------------------------------------- transformer blocks
class TestTransformerBlocks:
    def test_residual_attention_block(self):
        block = ResidualAttentionBlock(8, 2)
        check(block, rand(2, 3, 8))
        assert set(block.state_dict()) == {
            "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias",
            "ln_1.weight", "ln_1.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight",
            "mlp.c_proj.bias", "ln_2.weight", "ln_2.bias"}

    def test_residual_attention_block_causal_mask_is_sliced(self):
        block = ResidualAttentionBlock(8, 2, attn_mask=F.causal_mask(6, dtype=np.float64))
        check(block, rand(2, 4, 8), max_elements=0, n_directions=4)  # shorter than the mask
        x = rand(1, 6, 8)
        full = host(block(x))
        # causal: position i depends only on positions <= i, so a prefix gives a prefix
        np.testing.assert_allclose(host(block(x[:, :4])), full[:, :4], rtol=1e-12, atol=1e-12)
        with pytest.raises(ValueError, match="7 positions but the attention mask covers only 6"):
            block(rand(1, 7, 8))

    def test_mask_moves_with_to_and_forward_changes_no_attribute(self):
        block = ResidualAttentionBlock(8, 2, attn_mask=F.causal_mask(6, dtype=np.float64))
        assert "attn_mask" not in block.state_dict()  # a buffer that moves with .to(), not a checkpoint entry
        block.to(np.float32)
        assert block.attn_mask.dtype == np.float32
        before = dict(vars(block))
        x = Tensor(rand(1, 3, 8).data.astype(np.float32))
        assert block(x).dtype == np.float32
        # the matching mask: a view of its corner, no copy
        corner = block.mask_for(x)
        assert corner.shape == (3, 3) and corner.dtype == np.float32
        if not isinstance(corner, strict.ndarray):  # strict arrays do not expose a view's base
            assert corner.base is block.attn_mask
        # on every backend: the corner shares the mask's memory (a write shows through), then is put back
        assert host(block.attn_mask)[0, 1] == -np.inf
        corner[0, 1] = 5.0
        assert host(block.attn_mask)[0, 1] == 5.0
        corner[0, 1] = -np.inf
        np.testing.assert_array_equal(host(block.attn_mask), host(F.causal_mask(6, dtype=np.float32)))
        y = block(rand(1, 5, 8))  # float64 input: a float64 copy of the corner, made per call
        assert y.dtype == np.float64 and block.mask_for(rand(1, 5, 8)).dtype == np.float64
        assert all(vars(block)[k] is v for k, v in before.items()) and vars(block).keys() == before.keys()
        assert block.attn_mask.dtype == np.float32

    def test_transformer(self):
        t = Transformer(width=8, layers=2, heads=2, attn_mask=F.causal_mask(5, dtype=np.float64))
        assert len(t.resblocks) == 2 and t.width == 8 and t.layers == 2
        assert "resblocks.1.mlp.c_proj.weight" in t.state_dict()
        check(t, rand(2, 5, 8), max_elements=0, n_directions=4)

    def test_vision_transformer(self):
        vit = VisionTransformer(input_resolution=8, patch_size=4, width=8, layers=1, heads=2, output_dim=4)
        assert vit.positional_embedding.shape == (5, 8) and vit.proj.shape == (8, 4)
        assert vit.class_embedding.shape == (8,) and vit.conv1.bias is None
        x = rand(2, 3, 8, 8)
        assert vit(x).shape == (2, 4)
        check(vit, x, max_elements=0, n_directions=4)
        # every parameter, including the class token and ln_pre, gets a gradient
        vit.zero_grad()
        vit(x).sum().backward()
        assert all(p.grad is not None and np.abs(host(p.grad)).sum() > 0 for p in vit.parameters())

    def test_vision_transformer_images_are_independent(self):
        vit = VisionTransformer(input_resolution=8, patch_size=4, width=8, layers=1, heads=2, output_dim=4)
        x = rand(3, 3, 8, 8)
        np.testing.assert_allclose(host(vit(x))[1:2], host(vit(x[1:2])), rtol=1e-12)


# ----------------------------------------------------------------------------- resnet blocks
def _nontrivial_bn(module):
    """Random BN gains so no branch is switched off (CLIP zero-inits bn3)."""
    for name, p in module.named_parameters():
        if name.endswith("weight") and p.ndim == 1:
            nn.normal_(p, 1.0)


def smooth_relus(module):
    """Swap every ReLU for GELU. Central differences are wrong across a ReLU kink, and a whole ResNet has
    thousands of units, some within eps of 0. ReLU itself is checked above (and against PyTorch)."""
    for m in list(module.modules()):
        for name, v in list(vars(m).items()):
            if isinstance(v, nn.ReLU):
                setattr(m, name, nn.GELU())
    return module


class TestResNetBlocks:
    @pytest.mark.parametrize("stride", [1, 2])
    def test_bottleneck(self, stride):
        block = Bottleneck(4, 2, stride=stride)
        _nontrivial_bn(block)
        x = rand(2, 4, 4, 4)
        assert block(x).shape == (2, 8, 4 // stride, 4 // stride)
        check(block, x, max_elements=0, n_directions=4)

    def test_bottleneck_eval(self):
        block = Bottleneck(4, 2, stride=2).eval()
        _nontrivial_bn(block)
        check(block, rand(2, 4, 4, 4), max_elements=0, n_directions=4)

    def test_bottleneck_keys(self):
        keys = set(Bottleneck(4, 2, stride=2).state_dict())
        assert {"downsample.0.weight", "downsample.1.weight", "downsample.1.bias", "downsample.1.running_mean",
                "downsample.1.running_var", "downsample.1.num_batches_tracked"} <= keys
        assert not any(k.startswith("downsample.-1") for k in keys)  # the avgpool has no state
        assert Bottleneck(8, 2, stride=1).downsample is None  # identity shortcut when shapes agree
        assert Bottleneck(4, 2, stride=1).downsample is not None  # channel change needs a projection

    def test_bottleneck_antialiased(self):
        """Stride 2 is an average pool before conv3, never a strided convolution."""
        block = Bottleneck(4, 2, stride=2)
        convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
        assert all(c.stride == 1 for c in convs)
        assert isinstance(block.avgpool, nn.AvgPool2d) and block.avgpool.kernel_size == 2

    def test_attention_pool(self):
        pool = AttentionPool2d(spacial_dim=2, embed_dim=8, num_heads=2, output_dim=3)
        x = rand(2, 8, 2, 2)
        assert pool(x).shape == (2, 3)
        check(pool, x, max_elements=0, n_directions=4)
        assert list(pool.state_dict()) == [
            "positional_embedding", "k_proj.weight", "k_proj.bias", "q_proj.weight", "q_proj.bias",
            "v_proj.weight", "v_proj.bias", "c_proj.weight", "c_proj.bias"]

    def test_attention_pool_matches_reference(self):
        """The mean token, with position embeddings, queries [mean; HW tokens]: a loop over heads."""
        pool = AttentionPool2d(spacial_dim=2, embed_dim=8, num_heads=2, output_dim=3)
        x = rand(2, 8, 2, 2).data
        t = host(x).reshape(2, 8, 4).transpose(0, 2, 1)
        t = np.concatenate([t.mean(1, keepdims=True), t], 1) + host(pool.positional_embedding)  # (2, 5, 8)
        q = t[:, :1] @ host(pool.q_proj.weight).T + host(pool.q_proj.bias)
        k = t @ host(pool.k_proj.weight).T + host(pool.k_proj.bias)
        v = t @ host(pool.v_proj.weight).T + host(pool.v_proj.bias)
        out = []
        for h in range(2):
            s = slice(4 * h, 4 * h + 4)
            a = q[..., s] @ k[..., s].swapaxes(1, 2) / 2.0
            a = np.exp(a - a.max(-1, keepdims=True))
            out.append((a / a.sum(-1, keepdims=True)) @ v[..., s])
        ref = np.concatenate(out, -1)[:, 0] @ host(pool.c_proj.weight).T + host(pool.c_proj.bias)
        np.testing.assert_allclose(host(pool(x)), ref, rtol=1e-12)

    def test_attention_pool_wrong_grid(self):
        pool = AttentionPool2d(spacial_dim=2, embed_dim=8, num_heads=2)
        with pytest.raises(ValueError, match="2x2"):
            pool(rand(1, 8, 3, 3))

    def test_modified_resnet(self):
        net = smooth_relus(ModifiedResNet(layers=(1, 1, 1, 1), output_dim=4, heads=2, input_resolution=32, width=4))
        _nontrivial_bn(net)
        x = rand(2, 3, 32, 32)
        assert net(x).shape == (2, 4)
        check(net, x, max_elements=0, n_directions=3)

    def test_modified_resnet_eval_and_stem(self):
        net = ModifiedResNet(layers=(2, 1, 1, 1), output_dim=4, heads=2, input_resolution=64, width=4).eval()
        smooth_relus(net)
        _nontrivial_bn(net)
        x = rand(2, 3, 64, 64)
        assert net.stem(x).shape == (2, 4, 16, 16)  # stride-2 conv, then the 2x2 average pool
        assert net.layer4(net.layer3(net.layer2(net.layer1(net.stem(x))))).shape == (2, 128, 2, 2)
        assert len(net.layer1) == 2
        check(net, x, max_elements=0, n_directions=3)
