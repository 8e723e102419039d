import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import ROOT

from model import (
    DEFAULT_VGG,
    MLP,
    VGG,
    MobileNet,
    Residual,
    ResNet,
    atomic_save,
    build_model,
    count_parameters,
    fuse_for_inference,
    load_checkpoint,
    make_checkpoint,
    matched_mlp_config,
    mlp_params,
    model_from_checkpoint,
    store_fp16,
    whiten_stem,
)


def test_default_vgg_shape_and_size() -> None:
    model = build_model(DEFAULT_VGG).eval()
    assert isinstance(model, VGG)
    assert model(torch.rand(3, 1, 48, 48)).shape == (3, 7)
    assert 1_000_000 < count_parameters(model) <= 10_000_000


@pytest.mark.parametrize("channels, convs", [([8, 16], 1), ([16, 32, 64], 2), ([32, 64, 128, 256, 512], 1)])
def test_vgg_width_and_depth_are_configurable(channels: list[int], convs: int) -> None:
    model = VGG(channels, convs_per_stage=convs, hidden=32).eval()
    assert model(torch.rand(2, 1, 48, 48)).shape == (2, 7)
    n_convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    assert n_convs == len(channels) * convs


@pytest.mark.parametrize("arch", ["vgg", "resnet"])
def test_a_whitening_stem_decorrelates_the_patches_it_was_set_from(arch: str) -> None:
    torch.manual_seed(0)
    noise = torch.rand(64, 1, 50, 50)
    faces = 0.8 * torch.nn.functional.avg_pool2d(noise, 3, stride=1) + 0.2 * torch.rand(64, 1, 48, 48)  # neighbours
    model = build_model({"arch": arch, "channels": [8, 16], "hidden": 16, "mean": 0.5, "std": 0.2,  # correlate,
                         "stem": "whiten"})  # as a face's do
    whiten_stem(model, faces)
    normalize, conv = model.features[0], model.features[1]
    assert not conv.weight.requires_grad and conv.out_channels == 18
    with torch.no_grad():
        out = (conv(normalize(faces)) - conv.bias[:, None, None])[:, :, 1:-1, 1:-1]  # where no padding enters
    directions = out.permute(0, 2, 3, 1).flatten(0, 2)
    assert torch.equal(directions[:, 9:], -directions[:, :9])
    patches = torch.nn.functional.unfold(normalize(faces), 3).transpose(1, 2).flatten(0, 1)
    eigenvalues = torch.linalg.eigvalsh(patches.T @ patches / len(patches))
    covariance = directions[:, :9].T @ directions[:, :9] / len(directions)
    expected = torch.diag(eigenvalues / (eigenvalues + 5e-4))  # decorrelated, unit variance save for eps
    assert torch.allclose(covariance, expected, atol=1e-3)
    assert model.features[3].in_channels == 18  # the first learnt conv reads the whitened directions
    assert model.eval()(faces[:2]).shape == (2, 7)


def test_an_unknown_stem_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown stem"):
        VGG([8, 16], stem="patch")


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_mlp_param_formula_matches_the_module(depth: int) -> None:
    model = MLP(hidden=37, depth=depth)
    assert count_parameters(model) == mlp_params(37, depth)
    assert model.eval()(torch.rand(2, 1, 48, 48)).shape == (2, 7)


@pytest.mark.parametrize("cnn_config", [DEFAULT_VGG, {"arch": "vgg", "channels": [16, 32], "hidden": 64}])
def test_mlp_matches_a_cnn_within_one_percent(cnn_config: dict) -> None:
    target = count_parameters(build_model(cnn_config))
    mlp = build_model(matched_mlp_config(target, depth=2))
    assert abs(count_parameters(mlp) - target) / target <= 0.01


def test_impossible_match_is_refused() -> None:
    with pytest.raises(ValueError):
        matched_mlp_config(5000, depth=1)  # one hidden unit alone has ~2.3k parameters: no width fits 1 %


def test_checkpoint_rebuilds_the_model_alone(tmp_path: Path) -> None:
    config = {"arch": "vgg", "channels": [8, 16], "hidden": 16, "mean": 0.5, "std": 0.2}
    torch.manual_seed(0)
    model = build_model(config)
    model.train()(torch.rand(32, 1, 48, 48))  # move the BatchNorm running statistics off their defaults
    model.eval()
    path = tmp_path / "m.pt"
    atomic_save(make_checkpoint(model, config, class_names=["a"] * 7, split={"seed": 3}, git_commit="abc"), path)
    checkpoint = load_checkpoint(path)
    loaded = model_from_checkpoint(checkpoint)
    x = torch.rand(5, 1, 48, 48)
    assert torch.equal(loaded(x), model(x))
    assert checkpoint["split"] == {"seed": 3} and checkpoint["config"] == config
    assert float(loaded.features[0].mean) == 0.5  # normalisation travels inside the model
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary file left


def test_fp16_stored_weights_load_as_fp32(tmp_path: Path) -> None:
    config = {"arch": "vgg", "channels": [8, 16], "hidden": 16, "mean": 0.5077, "std": 0.2551}
    torch.manual_seed(0)
    model = build_model(config)
    model.train()(torch.rand(32, 1, 48, 48))
    model.eval()
    full, half = tmp_path / "f.pt", tmp_path / "h.pt"
    atomic_save(make_checkpoint(model, config), full)
    atomic_save(store_fp16(make_checkpoint(model, config)), half)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    state = load_checkpoint(half)["state_dict"]
    assert state["features.1.weight"].dtype == torch.float16  # a conv weight
    assert state["features.0.mean"].dtype == state["features.2.running_var"].dtype == torch.float32
    loaded = model_from_checkpoint(load_checkpoint(half))
    x = torch.rand(4, 1, 48, 48)
    assert next(loaded.parameters()).dtype == torch.float32
    assert torch.allclose(loaded(x), model(x), atol=1e-2)


@pytest.mark.parametrize("write", [
    lambda p: torch.save({"weights": torch.zeros(3)}, p),  # tensors, but not our format
    lambda p: torch.save(Counter("a pickled object that weights_only refuses"), p),
    lambda p: p.write_bytes(b"plain text"),
    lambda p: p.write_bytes(b""),
])
def test_a_foreign_file_is_not_a_checkpoint_and_the_message_says_what_it_is_not(tmp_path: Path, write) -> None:
    write(tmp_path / "x.pt")
    with pytest.raises(ValueError) as err:
        load_checkpoint(tmp_path / "x.pt")
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'x.pt'}: not a model file of this project") and "\n" not in message
    assert "weights_only" not in message


@pytest.mark.parametrize("config", [{"arch": "vgg", "channels": [8, 16], "hidden": 16},
                                    {"arch": "resnet", "channels": [8, 16, 32], "blocks_per_stage": 2, "hidden": 16}])
def test_folding_batchnorm_keeps_the_outputs(config: dict) -> None:
    torch.manual_seed(0)
    model = build_model(config)
    model.train()(torch.rand(64, 1, 48, 48))  # non-trivial running statistics to fold
    model.eval()
    x = torch.rand(8, 1, 48, 48)
    expected = model(x)
    fused = fuse_for_inference(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d) for m in fused.modules())
    assert torch.allclose(fused(x), expected, atol=1e-5)


def test_mobilenet_is_depthwise_separable_and_configurable() -> None:
    model = MobileNet([8, 16, 32, 64], blocks_per_stage=2).eval()
    assert model(torch.rand(2, 1, 48, 48)).shape == (2, 7)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    depthwise = [m for m in convs if m.groups == m.in_channels > 1]
    assert len(depthwise) == 8 and len(convs) == 1 + 2 * 8  # stem + (depthwise, pointwise) per block
    narrow, wide = (count_parameters(MobileNet([c, 2 * c, 4 * c, 8 * c])) for c in (8, 16))
    assert 3 * narrow < wide < 5 * narrow  # the pointwise weights grow with the square of the width


def test_resnet_widens_pools_then_adds_residual_blocks() -> None:
    model = ResNet([8, 16, 32], blocks_per_stage=2, hidden=16, side=40).eval()
    assert model(torch.rand(4, 1, 40, 40)).shape == (4, 7)
    n_convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    assert n_convs == 1 + 3 * (1 + 2 * 2)  # stem + per stage (widening conv + two blocks of two convs)
    assert sum(isinstance(m, Residual) for m in model.modules()) == 3 * 2


def test_a_resnet_block_adds_its_input() -> None:
    block = Residual(4).eval()
    for layer in block.body:
        if isinstance(layer, torch.nn.Conv2d):
            torch.nn.init.zeros_(layer.weight)  # a body that outputs its BatchNorm shift alone
    x = torch.rand(2, 4, 6, 6)
    assert torch.allclose(block(x), (x + block.body[-1].bias[None, :, None, None]).relu())


PAGE_FAULTS_OF_A_TEST_PASS = """
import resource, sys
import torch
from model import build_model, fuse_for_inference
from utils import keep_freed_memory
from predict import predict_proba
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
config = {"arch": "mobilenet", "channels": [36, 72, 144, 288], "blocks_per_stage": 2}  # the compact model's shape
model = fuse_for_inference(build_model(config).eval()).to(memory_format=torch.channels_last)
faces = torch.randint(0, 256, (256, 1, 48, 48), dtype=torch.uint8)
predict_proba(model, faces)  # the first pass takes the memory that later ones may reuse
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
predict_proba(model, faces)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults_of_a_test_pass(mode: str) -> tuple[str, int]:
    done = subprocess.run([sys.executable, "-c", PAGE_FAULTS_OF_A_TEST_PASS, mode], capture_output=True, text=True,
                          cwd=ROOT, check=True, timeout=120)
    applied, faults = done.stdout.split()
    return applied, int(faults)


def test_kept_memory_serves_the_next_batches_without_page_faults() -> None:
    applied, kept = page_faults_of_a_test_pass("keep")
    if applied == "False":
        pytest.skip("not glibc: keep_freed_memory leaves the allocator as it is")
    _, default = page_faults_of_a_test_pass("default")
    first_layer_pages = 32 * 36 * 48 * 48 * 4 // 4096  # one batch's stem output, fp32
    assert default > 8 * first_layer_pages  # by default each of the 8 batches lands on fresh pages
    # now and then one batch still lands on fresh pages, so ask for a tenth of the default's faults, not for none
    assert kept * 10 < default, f"{kept} page faults with the freed memory kept, {default} without"
