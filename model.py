"""The networks (VGG-, ResNet- and MobileNet-style CNNs, parameter-matched MLP) and the files that rebuild them.

A model takes float faces (N, 1, 48, 48) on the 0..1 scale; the normalisation statistics of its
training split live inside it as buffers, so a checkpoint alone is enough to predict.
"""

import pickle
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from utils import atomic_write

DEFAULT_VGG = {"arch": "vgg", "channels": [64, 128, 256, 512], "convs_per_stage": 2, "hidden": 256,
               "dropout": 0.4, "stage_dropout": 0.1}
CHECKPOINT_FORMAT = 1
STEMS = ("conv", "whiten")  # what a VGG or ResNet puts in front of its first learnt conv (stem_layers)
WHITEN_EPS = 5e-4  # airbench's: patch directions with almost no variance (pixel noise) are not blown up


class Normalize(nn.Module):
    def __init__(self, mean: float, std: float):
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    # No conv bias: the BatchNorm shift that follows makes it redundant.
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def stem_layers(stem: str, mean: float, std: float) -> tuple[list[nn.Module], int]:
    """What a CNN puts in front of its first learnt conv, and the channels that conv then reads. conv: the
    normalised face; whiten: airbench's fixed conv that whitens its 3x3 patches, set by whiten_stem."""
    if stem == "conv":
        return [Normalize(mean, std)], 1
    if stem != "whiten":
        raise ValueError(f"unknown stem {stem!r}: one of {', '.join(STEMS)}")
    whiten = nn.Conv2d(1, 2 * 9, 3, padding=1)  # each direction and its negation, so both pass the ReLU
    whiten.weight.requires_grad_(False)  # the data's whitening, kept; its bias still learns
    return [Normalize(mean, std), whiten, nn.ReLU(inplace=True)], whiten.out_channels


class VGG(nn.Module):
    """Stages of (3x3 conv, BatchNorm, ReLU) x convs_per_stage, each closed by 2x2 max-pool."""

    def __init__(self, channels: list[int], convs_per_stage: int = 2, hidden: int = 256, dropout: float = 0.4,
                 stage_dropout: float = 0.1, num_classes: int = 7, mean: float = 0.0, std: float = 1.0,
                 side: int = 48, stem: str = "conv"):
        super().__init__()
        self.side = side  # the input's side: a model trained on crops predicts on crops (predict.views)
        layers, cin = stem_layers(stem, mean, std)
        for cout in channels:
            for _ in range(convs_per_stage):
                layers += conv_bn_relu(cin, cout)
                cin = cout
            layers += [nn.MaxPool2d(2), nn.Dropout(stage_dropout)]
        self.features = nn.Sequential(*layers)
        self.classifier = hidden_layer_head(cin, side // 2 ** len(channels), hidden, dropout, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def whiten_stem(model: nn.Module, faces: torch.Tensor, eps: float = WHITEN_EPS) -> None:
    """Set the stem of a VGG or ResNet built with stem="whiten" from training faces (N, 1, H, W, on the 0..1 scale):
    the eigenvectors of the covariance of their normalised 3x3 patches, each scaled by 1 / sqrt(its eigenvalue + eps),
    and their negations (Jordan's airbench), so that the first learnt conv sees decorrelated patches of unit
    variance."""
    normalize, conv = model.features[0], model.features[1]
    with torch.no_grad():
        patches = nn.functional.unfold(normalize(faces.float()), conv.kernel_size).transpose(1, 2).flatten(0, 1)
        eigenvalues, eigenvectors = torch.linalg.eigh(patches.T @ patches / len(patches))
        filters = (eigenvectors.T / (eigenvalues + eps).sqrt()[:, None]).reshape(-1, *conv.weight.shape[1:])
        conv.weight.copy_(torch.cat([filters, -filters]))
        conv.bias.zero_()


def hidden_layer_head(channels: int, spatial: int, hidden: int, dropout: float, num_classes: int) -> nn.Sequential:
    """The last map flattened (where on the face a feature fired still counts), one hidden layer, the classes."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(channels * spatial * spatial, hidden, bias=False),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )


class Residual(nn.Module):
    """Two (3x3 conv, BatchNorm) layers, ReLU between, added to their input, then ReLU (He et al. 2016)."""

    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(*conv_bn_relu(width, width), nn.Conv2d(width, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).add_(x).relu_()  # in place: no new tensors to allocate and fill


class ResNet(nn.Module):
    """The shape of Page's ResNet-9 (the CIFAR-10 speed runs): a stem conv, then stages of a widening
    (3x3 conv, BatchNorm, ReLU), 2x2 max-pool and residual blocks at the pooled size, where a conv costs a
    quarter of what it would before the pool; the VGG's head. A network of another family than the VGG
    members, for ensembles."""

    def __init__(self, channels: list[int], blocks_per_stage: int = 1, hidden: int = 256, dropout: float = 0.4,
                 stage_dropout: float = 0.1, num_classes: int = 7, mean: float = 0.0, std: float = 1.0,
                 side: int = 48, stem: str = "conv"):
        super().__init__()
        self.side = side
        layers, cin = stem_layers(stem, mean, std)
        layers += conv_bn_relu(cin, channels[0])
        cin = channels[0]
        for cout in channels:
            layers += [*conv_bn_relu(cin, cout), nn.MaxPool2d(2)]
            layers += [Residual(cout) for _ in range(blocks_per_stage)]
            layers.append(nn.Dropout(stage_dropout))
            cin = cout
        self.features = nn.Sequential(*layers)
        self.classifier = hidden_layer_head(cin, side // 2 ** len(channels), hidden, dropout, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class MLP(nn.Module):
    """Fully connected baseline: depth hidden layers of (Linear, BatchNorm, ReLU, Dropout)."""

    def __init__(self, hidden: int, depth: int = 2, dropout: float = 0.4, num_classes: int = 7,
                 mean: float = 0.0, std: float = 1.0, side: int = 48):
        super().__init__()
        self.side = side
        layers: list[nn.Module] = [Normalize(mean, std), nn.Flatten()]
        width = side * side
        for _ in range(depth):
            layers += [nn.Linear(width, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                       nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Separable(nn.Module):
    """MobileNet block: 3x3 depthwise conv (spatial, one filter per channel) then 1x1 pointwise conv (mixes
    channels), each with BatchNorm: 1/9 + 1/cout of the weights and multiply-adds of a full 3x3 conv.
    A residual connection when the shapes allow it, so deep stacks of thin blocks still train."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
            nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.residual = cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return (y.add_(x) if self.residual else y).relu_()  # in place: no new tensors to allocate and fill


class MobileNet(nn.Module):
    """A full 3x3 stem conv, then stages of depthwise-separable blocks, each stage closed by 2x2 max-pool;
    the last map (channels[-1] x 3 x 3) is flattened into one linear layer, which keeps where on the face
    a feature fired (global average pooling would not) for 9 x 7 weights per channel."""

    def __init__(self, channels: list[int], blocks_per_stage: int = 2, dropout: float = 0.2,
                 num_classes: int = 7, mean: float = 0.0, std: float = 1.0, side: int = 48):
        super().__init__()
        self.side = side
        layers: list[nn.Module] = [Normalize(mean, std), *conv_bn_relu(1, channels[0])]
        cin = channels[0]
        for cout in channels:
            for _ in range(blocks_per_stage):
                layers.append(Separable(cin, cout))
                cin = cout
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        spatial = side // 2 ** len(channels)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(dropout),
                                        nn.Linear(cin * spatial * spatial, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


ARCHITECTURES = {"vgg": VGG, "resnet": ResNet, "mobilenet": MobileNet, "mlp": MLP}


def build_model(config: dict) -> nn.Module:
    """config = {"arch": name, **constructor keyword arguments}; the same dict a checkpoint stores."""
    kwargs = dict(config)
    return ARCHITECTURES[kwargs.pop("arch")](**kwargs)


def fuse_for_inference(model: nn.Module) -> nn.Module:
    """Fold each BatchNorm into the convolution or linear layer before it (eval mode only): one layer
    instead of two per block for faster CPU inference; outputs agree to float rounding."""
    for module in list(model.modules()):
        if not isinstance(module, nn.Sequential):
            continue
        layers, fused = list(module), []
        while layers:
            layer = layers.pop(0)
            if layers and isinstance(layer, nn.Conv2d) and isinstance(layers[0], nn.BatchNorm2d):
                layer = fuse_conv_bn_eval(layer, layers.pop(0))
            elif layers and isinstance(layer, nn.Linear) and isinstance(layers[0], nn.BatchNorm1d):
                layer = fuse_linear_bn_eval(layer, layers.pop(0))
            fused.append(layer)
        module._modules = {str(i): layer for i, layer in enumerate(fused)}
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def mlp_params(hidden: int, depth: int, side: int = 48, num_classes: int = 7) -> int:
    # Each hidden layer: weights + BatchNorm scale and shift; then the output layer with its bias.
    inputs = side * side
    first = inputs * hidden + 2 * hidden
    return first + (depth - 1) * (hidden * hidden + 2 * hidden) + hidden * num_classes + num_classes


def matched_mlp_config(target_params: int, depth: int = 2, tolerance: float = 0.01, **kwargs) -> dict:
    """The MLP config whose parameter count is closest to target_params (must be within tolerance)."""
    lo, hi = 1, 1
    while mlp_params(hi, depth) < target_params:
        hi *= 2
    while lo < hi:  # smallest width reaching the target; its predecessor may be closer
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if mlp_params(mid, depth) < target_params else (lo, mid)
    hidden = min((lo - 1, lo), key=lambda h: abs(mlp_params(h, depth) - target_params) if h > 0 else float("inf"))
    error = abs(mlp_params(hidden, depth) - target_params) / target_params
    if error > tolerance:
        raise ValueError(f"no {depth}-layer MLP within {tolerance:.0%} of {target_params} parameters")
    return {"arch": "mlp", "hidden": hidden, "depth": depth, **kwargs}


def atomic_save(obj: object, path: str | Path) -> None:
    with atomic_write(path) as f:
        torch.save(obj, f)


def make_checkpoint(model: nn.Module, config: dict, **metadata) -> dict:
    """Everything needed to rebuild and audit a model: only tensors, numbers, strings, lists and dicts."""
    return {"format": CHECKPOINT_FORMAT, "config": config, "state_dict": model.state_dict(), **metadata}


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint of this project; anything else is a one-line ValueError that says what the file is not
    (never PyTorch's own message, which suggests loading untrusted files with weights_only=False)."""
    not_ours = f"{path}: not a model file of this project (neither a checkpoint of format {CHECKPOINT_FORMAT} " \
               f"nor a compact .q8 file)"
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # no pickled code runs
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError, KeyError,
            IndexError):  # not OSError: a missing or unreadable file is reported as such
        raise ValueError(not_ours) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(not_ours)
    return checkpoint


def store_fp16(checkpoint: dict) -> dict:
    """The checkpoint with its conv and linear weights stored as fp16 (half the bytes; model_from_checkpoint turns
    them back into fp32). Normalisation, BatchNorm and biases stay fp32: they are few, and the
    normalisation statistics would lose their last digits."""
    state = {k: v.half() if v.is_floating_point() and v.ndim >= 2 else v for k, v in checkpoint["state_dict"].items()}
    return {**checkpoint, "state_dict": state, "weights_stored_as": "float16"}


def fp32_state(state_dict: dict) -> dict:
    """A state dict with fp16-stored weights (store_fp16) turned back into fp32, ready to load."""
    return {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}


def model_from_checkpoint(checkpoint: dict) -> nn.Module:
    """The network of a checkpoint (load_checkpoint), in eval mode; fp16-stored weights come back as fp32."""
    model = build_model(checkpoint["config"])
    model.load_state_dict(fp32_state(checkpoint["state_dict"]))
    return model.eval()
