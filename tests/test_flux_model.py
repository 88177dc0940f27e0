"""FLUX.1 MMDiT: shapes, the reference's latent packing, the rectified-flow objective, and the
planner's parameter count against the real module at full scale (meta device, no memory)."""
import torch

from pinchpoint.workloads.flux1 import model as M
from pinchpoint.workloads.flux1 import plan as P

FULL = M.MMDiTShape(in_channels=64, vec_in_dim=768, context_in_dim=4096, hidden_size=3072,
                    num_heads=24, depth=19, depth_single_blocks=38)
TINY = M.MMDiTShape(in_channels=64, vec_in_dim=24, context_in_dim=40, hidden_size=48,
                    num_heads=4, depth=2, depth_single_blocks=1, axes_dim=(4, 4, 4))


def test_full_scale_parameters_match_planner_and_published_size():
    with torch.device("meta"):
        model = M.FluxMMDiT(FULL)
    counted = sum(p.numel() for p in model.parameters())
    assert counted == P.mmdit_parameters(FULL)
    assert 11.8e9 < counted < 12.0e9          # "about 11.9 B" (reference README)


def test_tiny_shapes_and_planner_agree():
    model = M.FluxMMDiT(TINY)
    assert sum(p.numel() for p in model.parameters()) == P.mmdit_parameters(TINY)
    assert len(model.double_blocks) == 2 and len(model.single_blocks) == 1
    # real FLUX state-dict names
    names = dict(model.named_parameters())
    assert "double_blocks.0.img_attn.qkv.weight" in names
    assert "single_blocks.0.linear1.weight" in names and "final_layer.adaLN_modulation.1.weight" in names


def test_pack_unpack_round_trip_and_position_ids():
    x = torch.randn(2, 16, 8, 6)
    packed = M.pack_latents(x)
    assert packed.shape == (2, 4 * 3, 64)
    assert torch.equal(M.unpack_latents(packed, 8, 6), x)
    ids = M.latent_position_ids(2, 8, 6)
    assert ids.shape == (2, 12, 3)
    assert ids[0, 4].tolist() == [0.0, 1.0, 1.0]   # row 1, column 1 of a 4x3 patch grid


def test_forward_shape_and_zero_init_predicts_zero():
    torch.manual_seed(0)
    model = M.FluxMMDiT(TINY)
    model.init_weights()
    x, noise = torch.randn(3, 16, 4, 4), torch.randn(3, 16, 4, 4)
    t5, clip = torch.randn(3, 7, 40), torch.randn(3, 24)
    out = model(M.pack_latents(x), M.latent_position_ids(3, 4, 4), t5, torch.zeros(3, 7, 3),
                torch.rand(3), clip)
    assert out.shape == (3, 4, 64)
    assert torch.count_nonzero(out) == 0     # DiT init: zero output layer
    loss = M.flow_loss(model, x, t5, clip, torch.rand(3), noise)
    assert torch.allclose(loss, ((noise - x) ** 2).mean(dim=(1, 2, 3)))


def test_flow_loss_learns_and_depends_on_text():
    """Two captions, two latents: a few steps drive the loss down, and swapping the text
    embeddings makes it worse, so the text path carries information."""
    torch.manual_seed(0)
    model = M.FluxMMDiT(TINY)
    model.init_weights()
    x = torch.randn(2, 16, 4, 4).repeat(8, 1, 1, 1)
    t5 = torch.randn(2, 7, 40).repeat(8, 1, 1)
    clip = torch.randn(2, 24).repeat(8, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(1)
    first = None
    for _ in range(60):
        t = M.sample_train_timesteps(16, gen)
        loss = M.flow_loss(model, x, t5, clip, t, torch.randn(x.shape, generator=gen)).mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    t = torch.full((16,), 0.875)
    noise = torch.randn(x.shape, generator=gen)
    with torch.no_grad():
        right = M.flow_loss(model, x, t5, clip, t, noise).mean()
        swapped = M.flow_loss(model, x, t5.roll(1, 0), clip.roll(1, 0), t, noise).mean()
    assert loss.item() < 0.8 * first
    assert right < swapped


def test_validation_timesteps_are_index_over_eight():
    assert M.validation_timesteps(torch.arange(8)).tolist() == [k / 8 for k in range(8)]


def test_latent_normalisation_matches_reference_formula():
    mean, logvar = torch.randn(2, 16, 4, 4), torch.full((2, 16, 4, 4), -40.0)
    z = M.latent_from_mean_logvar(mean, logvar, 0.1159, 0.3611)
    assert torch.allclose(z, (mean - 0.1159) * 0.3611, atol=1e-6)


def test_activation_recompute_gives_the_same_gradients():
    torch.manual_seed(0)
    model = M.FluxMMDiT(TINY)
    model.init_weights()
    with torch.no_grad():   # non-zero output layer so every block gets a gradient
        model.final_layer.linear.weight.normal_(std=0.1)
    x, noise = torch.randn(2, 16, 4, 4), torch.randn(2, 16, 4, 4)
    t5, clip, t = torch.randn(2, 5, 40), torch.randn(2, 24), torch.rand(2)
    grads = []
    for recompute in (False, True):
        model.zero_grad()
        model.recompute = recompute
        M.flow_loss(model, x, t5, clip, t, noise).mean().backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))


def _bfl_rms_norm(x, scale, eps=1e-6):
    """Black Forest Labs' flux RMSNorm (modules/layers.py): normalise in float32, then scale."""
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * scale


def test_qk_norm_is_the_reference_formula_at_small_activations():
    """With q/k of rms 0.1 torch's default eps (1.2e-7) is 6e-5 off BFL's 1e-6 (relative); the
    model's q/k norm matches the reference formula to float rounding."""
    torch.manual_seed(0)
    norm = M.QKNorm(128)
    with torch.no_grad():
        norm.query_norm.weight.normal_(1.0, 0.1)
    q = 0.1 * torch.randn(2, 4, 16, 128)
    reference = _bfl_rms_norm(q, norm.query_norm.weight)

    def worst(out):
        return ((out - reference).abs() / reference.abs()).max().item()

    torch_default = torch.nn.RMSNorm(128)
    torch_default.load_state_dict(norm.query_norm.state_dict())
    assert worst(torch_default(q)) > 3e-5          # what the default eps gave
    assert worst(norm.query_norm(q)) < 1e-6
