"""The callbacks on the models users really train, built from their libraries' configs and
trained a few steps on the CPU: GPT-2 (tied embeddings) and BERT from ``transformers``,
ResNet-18 in ``channels_last``, and a ``torch.compile``d model."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch import nn

from blocksparsity import (
    DataNormSparsifier,
    LinearSLScheduler,
    PostTrainingDataSparsity,
    StepSLScheduler,
    TrainingAwareDataSparsity,
    kernels,
)
from blocksparsity.callbacks import weight_matrices
from tests.helpers.lightning_models import TinyModule, loader, ramp_ends_late, trainer
from tests.helpers.real_models import (
    Wrapped,
    classification_loss,
    image_loader,
    image_loss,
    lm_loss,
    resnet18,
    tiny_bert,
    tiny_gpt2,
    token_loader,
)

HALF_BLOCKS = {"sparsity_level": 0.5, "sparse_block_shape": (1, 4), "zeros_per_block": 4}
TWO_FOUR = {"sparsity_level": 1.0, "sparse_block_shape": (1, 4), "zeros_per_block": 2}


def _inplace(**kwargs) -> TrainingAwareDataSparsity:
    return TrainingAwareDataSparsity(DataNormSparsifier, TWO_FOUR, LinearSLScheduler,
                                     {"init_sl": 0.5, "init_t": 0, "total_t": 2}, inplace=True,
                                     schedule_interval="step", **kwargs)


def _overall(masks: dict[str, torch.Tensor]) -> float:
    return sum(int((~m).sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())


# ------------------------------------------------------------------ GPT-2: tied embeddings
GPT2_MATRICES = {"transformer.wte.weight", "transformer.wpe.weight"} | {
    f"transformer.h.{i}.{name}.weight" for i in range(2) for name in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
}


def test_gpt2_tied_embedding_is_sparsified_once_and_the_copy_keeps_the_tie():
    model = tiny_gpt2()
    assert model.lm_head.weight is model.transformer.wte.weight
    pt = PostTrainingDataSparsity(DataNormSparsifier, HALF_BLOCKS)
    ta = TrainingAwareDataSparsity(DataNormSparsifier, HALF_BLOCKS, StepSLScheduler, {"gamma": 1.0})
    module = Wrapped(model, lm_loss)
    trainer(max_epochs=2, callbacks=[pt, ta]).fit(module, token_loader())
    assert all(torch.isfinite(torch.tensor(module.losses)))
    for cb, prefix in ((pt, "post_training_sparsity"), (ta, "training_aware_sparsity")):
        # one mask for the tied weight, under its first name; no bias, LayerNorm or 1-D tensor
        assert set(cb.masks) == GPT2_MATRICES
        names = [layer.name for layer in cb.layers]
        assert sorted(names) == sorted(GPT2_MATRICES)  # one row each, lm_head.weight not again
        assert cb.history[-1][f"{prefix}/overall"] == _overall(cb.masks)  # the tied weight counted once
        copy = cb.sparsified
        assert copy.lm_head.weight is copy.transformer.wte.weight  # the tie is kept
        mask = cb.masks["transformer.wte.weight"]
        assert torch.equal(copy.lm_head.weight.detach(), model.transformer.wte.weight.detach() * mask)
        assert (copy.lm_head.weight == 0).float().mean() == 0.5
        for name, p in copy.named_parameters():
            if name not in GPT2_MATRICES:
                assert torch.equal(p.detach(), model.get_parameter(name).detach()), name  # biases, LayerNorm: dense
        assert copy(input_ids=torch.zeros(1, 4, dtype=torch.long)).logits.shape == (1, 4, 64)
    assert (model.transformer.wte.weight == 0).sum() == 0  # the live model is untouched
    expected = kernels.block_mask(model.transformer.wte.weight.detach(), 0.5, (1, 4), 4)
    assert torch.equal(pt.masks["transformer.wte.weight"], expected)


def test_gpt2_in_place_keeps_both_ends_of_the_tie_masked():
    model = tiny_gpt2()
    ta = _inplace()
    module = Wrapped(model, lm_loss)
    trainer(max_epochs=2, callbacks=[ta]).fit(module, token_loader())
    assert model.lm_head.weight is model.transformer.wte.weight
    mask = ta.masks["transformer.wte.weight"]
    assert (model.lm_head.weight[~mask] == 0).all() and (~mask).float().mean() == 0.5  # 2:4 at level 1
    for name in GPT2_MATRICES:
        assert (model.get_parameter(name)[~ta.masks[name]] == 0).all(), name
    assert all(torch.isfinite(torch.tensor(module.losses)))


def test_a_filter_on_the_second_name_of_a_tied_weight_selects_it_once():
    pt = PostTrainingDataSparsity(DataNormSparsifier, HALF_BLOCKS, param_filter="lm_head.*")
    trainer(max_steps=1, callbacks=[pt]).fit(Wrapped(tiny_gpt2(), lm_loss), token_loader())
    assert set(pt.masks) == {"transformer.wte.weight"}


# ------------------------------------------------------------------ BERT
def test_bert_matrices_and_embedding_tables_by_default_norms_and_biases_dense():
    model = tiny_bert()
    no_positions = lambda name, p: weight_matrices(name, p) and "position_embeddings" not in name
    pt = PostTrainingDataSparsity(DataNormSparsifier, HALF_BLOCKS)
    ta = TrainingAwareDataSparsity(DataNormSparsifier, HALF_BLOCKS, StepSLScheduler, {"gamma": 1.0},
                                   param_filter=no_positions)
    module = Wrapped(model, classification_loss)
    trainer(max_epochs=1, callbacks=[pt, ta]).fit(module, token_loader(labels=True))
    expected = {name for name, p in model.named_parameters() if p.dim() >= 2}
    assert {"bert.embeddings.word_embeddings.weight", "bert.embeddings.position_embeddings.weight",
            "bert.embeddings.token_type_embeddings.weight", "classifier.weight"} <= expected
    assert set(pt.masks) == expected
    assert not any("LayerNorm" in name or name.endswith(".bias") for name in pt.masks)
    assert set(ta.masks) == expected - {"bert.embeddings.position_embeddings.weight"}
    for name, mask in pt.masks.items():
        w = model.get_parameter(name).detach()
        assert torch.equal(mask, kernels.block_mask(w, 0.5, (1, 4), 4)), name
        assert torch.equal(pt.sparsified.get_parameter(name).detach(), w * mask)

    inplace = _inplace()
    module = Wrapped(tiny_bert(), classification_loss)
    trainer(max_epochs=2, callbacks=[inplace]).fit(module, token_loader(labels=True))
    assert set(inplace.masks) == expected
    for name, mask in inplace.masks.items():
        assert (module.model.get_parameter(name)[~mask] == 0).all(), name
    assert all(torch.isfinite(torch.tensor(module.losses)))


# ------------------------------------------------------------------ ResNet-18, channels_last
@ramp_ends_late
def test_resnet18_channels_last_masks_equal_the_contiguous_weights_and_the_copy_keeps_the_format():
    model = resnet18().to(memory_format=torch.channels_last)
    # torchvision's resnet18: 11,689,512 parameters in 62 tensors, 60 BatchNorm buffers
    assert sum(p.numel() for p in model.parameters()) == 11_689_512
    assert len(list(model.parameters())) == 62 and len(list(model.buffers())) == 60
    assert not model.conv1.weight.is_contiguous()
    pt = PostTrainingDataSparsity(DataNormSparsifier, HALF_BLOCKS)
    module = Wrapped(model, image_loss)
    trainer(max_steps=2, callbacks=[pt]).fit(module, image_loader(channels_last=True))
    convs = {name for name, p in model.named_parameters() if p.dim() == 4}
    assert len(convs) == 20 and set(pt.masks) == convs | {"fc.weight"}  # BatchNorm's 1-D weights stay dense
    for name, mask in pt.masks.items():
        w = model.get_parameter(name).detach()
        assert torch.equal(mask, kernels.block_mask(w.contiguous(), 0.5, (1, 4), 4)), name
        copied = pt.sparsified.get_parameter(name)
        assert copied.stride() == w.stride(), name  # channels_last kept
        assert torch.equal(copied.detach(), w * mask), name
    assert torch.equal(pt.sparsified.bn1.weight, model.bn1.weight)

    inplace = _inplace()
    model = resnet18().to(memory_format=torch.channels_last)
    trainer(max_epochs=1, callbacks=[inplace]).fit(Wrapped(model, image_loss), image_loader(channels_last=True))
    assert model.layer1[0].conv1.weight.is_contiguous(memory_format=torch.channels_last)
    for name, mask in inplace.masks.items():
        assert (model.get_parameter(name)[~mask] == 0).all(), name
    assert inplace.sparsified.conv1.weight.is_contiguous(memory_format=torch.channels_last)


# ------------------------------------------------------------------ torch.compile
class Compiled(TinyModule):
    """``TinyModule`` whose ``self.model`` is ``torch.compile(net)``, as users write it."""

    def __init__(self, backend, **kwargs):
        super().__init__(**kwargs)
        self.model = torch.compile(self.model["mlp"], backend=backend)  # an OptimizedModule around the MLP

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(nn.functional.one_hot(idx % 16, 16).float()).squeeze(-1)


def test_compiled_model_by_the_users_names_everywhere():
    from torch._dynamo.testing import CompileCounterWithBackend

    from tests.helpers.lightning_models import CaptureLogger

    torch._dynamo.reset()
    module = Compiled(CompileCounterWithBackend("eager"))
    assert next(n for n, _ in module.model.named_parameters()) == "_orig_mod.0.weight"
    logger = CaptureLogger()
    pt = PostTrainingDataSparsity(DataNormSparsifier, HALF_BLOCKS, param_filter="0.*")  # a glob for the plain MLP
    ta = TrainingAwareDataSparsity(DataNormSparsifier, HALF_BLOCKS, StepSLScheduler, {"gamma": 1.0})
    trainer(max_epochs=1, callbacks=[pt, ta], logger=logger).fit(module, loader())
    assert set(pt.masks) == {"0.weight", "0.bias"}
    assert set(ta.masks) == {"0.weight", "2.weight"} == {layer.name for layer in ta.layers}
    logged = {key for metrics in logger.metrics for key in metrics}
    assert "training_aware_sparsity/0.weight" in logged and not any("_orig_mod" in key for key in logged)
    assert set(ta.state_dict()["sparsifier"]["state"]) == {"0.weight", "2.weight"}
    for cb in (pt, ta):  # the copy is the user's module (compile it again to run it compiled)
        assert type(cb.sparsified) is nn.Sequential
        assert not any("_orig_mod" in key for key in cb.sparsified.state_dict())
    w = module.model._orig_mod[0].weight.detach()
    assert torch.equal(pt.sparsified[0].weight.detach(), w * kernels.block_mask(w, 0.5, (1, 4), 4))


def test_compiled_submodule_names_and_an_uncompiled_copy():
    class Nested(TinyModule):
        def __init__(self):
            super().__init__()
            self.model["mlp"] = torch.compile(self.model["mlp"], backend="eager")

    torch._dynamo.reset()
    module = Nested()
    assert "mlp._orig_mod.0.weight" in dict(module.model.named_parameters())
    pt = PostTrainingDataSparsity(DataNormSparsifier, HALF_BLOCKS, param_filter=["mlp.0.weight", "embed.*"])
    trainer(max_epochs=1, callbacks=[pt]).fit(module, loader())
    assert set(pt.masks) == {"embed.weight", "mlp.0.weight"}
    assert type(pt.sparsified["mlp"]) is nn.Sequential  # the copy holds the user's module, not the wrapper
    assert set(pt.sparsified.state_dict()) == {"embed.weight", "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"}
    live = module.model["mlp"]._orig_mod
    assert torch.equal(pt.sparsified["mlp"][0].weight.detach(), live[0].weight.detach() * pt.masks["mlp.0.weight"])
    assert type(module.model["mlp"]) is not nn.Sequential  # the live model stays compiled


def test_a_compiled_lightning_module():
    torch._dynamo.reset()
    module = TinyModule()
    pt = PostTrainingDataSparsity(DataNormSparsifier, HALF_BLOCKS)
    trainer(max_epochs=1, callbacks=[pt]).fit(torch.compile(module, backend="eager"), loader())  # Lightning unwraps it
    assert set(pt.masks) == {"embed.weight", "mlp.0.weight", "mlp.2.weight"}
    w = module.model["mlp"][0].weight.detach()
    assert torch.equal(pt.sparsified["mlp"][0].weight.detach(), w * kernels.block_mask(w, 0.5, (1, 4), 4))


def _frames(callbacks: list[pl.Callback]) -> int:
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    module = Compiled(counter, momentum=0.9)
    trainer(max_epochs=3, callbacks=callbacks).fit(module, loader(), loader(32))
    assert module.training_steps == 24
    return counter.frame_count


def test_in_place_masking_does_not_recompile_a_compiled_model():
    ta = _inplace(every_n_steps=2)
    with_masks = _frames([ta])
    assert ta.updates_done == 12
    assert (ta.masks["0.weight"].logical_not().float().mean()) == 0.5
    # as many compiled graphs as without the callback: train and eval mode (validation), not one per step
    assert with_masks == _frames([]) <= 4
