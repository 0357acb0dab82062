"""The models Lightning users train, tiny and built from their configs (no download): GPT-2
(tied embeddings) and BERT from ``transformers``, torchvision's ResNet-18, and a LightningModule
that trains any of them for a few steps on the CPU.

torchvision is used when it imports cleanly. Its PyPI wheel for torch 2.13 is a CUDA build
whose ``_C`` does not load beside the CPU torch, so elsewhere ``resnet18`` builds the same
architecture from ``torch.nn`` (torchvision's BasicBlock ResNet-18: the same parameter
names, shapes and initialisation).
"""

from __future__ import annotations

from collections.abc import Callable

import lightning.pytorch as pl
import torch
from torch import nn

VOCAB, SEQ = 64, 16


# ------------------------------------------------------------------ transformers
def tiny_gpt2() -> nn.Module:
    """``GPT2LMHeadModel`` with 2 layers of width 32; ``lm_head.weight`` is tied to
    ``transformer.wte.weight``. No dropout, so training is deterministic."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=SEQ, bos_token_id=0,
                        eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(config)


def tiny_bert() -> nn.Module:
    """``BertForSequenceClassification`` with 2 layers of width 32 and 2 labels, no dropout."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=SEQ, num_labels=2, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    return BertForSequenceClassification(config)


def lm_loss(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    (ids,) = batch
    return model(input_ids=ids, labels=ids).loss


def classification_loss(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    ids, labels = batch
    return model(input_ids=ids, labels=labels).loss


def token_loader(n: int = 16, batch_size: int = 4, labels: bool = False) -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB, (n, SEQ), generator=g)
    tensors = (ids, torch.randint(0, 2, (n,), generator=g)) if labels else (ids,)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*tensors), batch_size=batch_size)


# ------------------------------------------------------------------ ResNet-18
class BasicBlock(nn.Module):
    """torchvision's ``BasicBlock`` (expansion 1)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet18(nn.Module):
    """torchvision's ``resnet18(weights=None)``, layer for layer."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._layer(64, 1)
        self.layer2 = self._layer(128, 2)
        self.layer3 = self._layer(256, 2)
        self.layer4 = self._layer(512, 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _layer(self, planes: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        blocks = [BasicBlock(self.inplanes, planes, stride, downsample), BasicBlock(planes, planes)]
        self.inplanes = planes
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def torchvision_resnet18() -> Callable[..., nn.Module] | None:
    """torchvision's ``resnet18`` when torchvision imports and runs here, else ``None``."""
    try:
        from torchvision.models import resnet18

        resnet18(weights=None)  # its _C fails to load beside a torch it was not built for
    except Exception:
        return None
    return resnet18


def resnet18() -> nn.Module:
    torch.manual_seed(0)
    factory = torchvision_resnet18()
    return factory(weights=None) if factory is not None else ResNet18()


def image_loss(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    images, labels = batch
    return nn.functional.cross_entropy(model(images), labels)


def image_loader(n: int = 4, batch_size: int = 2, channels_last: bool = False) -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(n, 3, 32, 32, generator=g)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 1000, (n,), generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=batch_size)


# ------------------------------------------------------------------ the LightningModule
class Wrapped(pl.LightningModule):
    """Trains ``model`` (under ``.model``, as the callbacks look for it) with ``loss(model, batch)``."""

    def __init__(self, model: nn.Module, loss: Callable[[nn.Module, tuple], torch.Tensor], lr: float = 0.01):
        super().__init__()
        self.model, self.loss, self.lr = model, loss, lr
        self.losses: list[float] = []

    def training_step(self, batch, batch_idx):
        loss = self.loss(self.model, batch)
        self.losses.append(float(loss.detach()))
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)
