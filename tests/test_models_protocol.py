"""The one multi-head vocabulary (fcnseg.models.protocol): a tensor is the primary head."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fcnseg.errors import ModelOptionError
from fcnseg.models.protocol import (
    PRIMARY_HEAD,
    SharedTrunkModel,
    as_heads,
    fcn_variant,
    is_multi_head,
    like_output,
    map_heads,
    primary_head_name,
    primary_output,
    upsample_mode,
)


def test_primary_head_is_semantic_when_present_else_the_first() -> None:
    assert primary_head_name(["geometric", PRIMARY_HEAD]) == PRIMARY_HEAD
    assert primary_head_name({"depth": 1, "normals": 3}) == "depth"
    with pytest.raises(ValueError, match="no heads"):
        primary_head_name([])


def test_as_heads_names_a_single_tensor_the_primary_head_and_copies_a_mapping() -> None:
    tensor = torch.zeros(1)
    assert as_heads(tensor) == {PRIMARY_HEAD: tensor}
    heads = {"geometric": tensor}
    copied = as_heads(heads)
    assert copied == heads and copied is not heads


def test_is_multi_head_only_for_mappings() -> None:
    assert is_multi_head({"semantic": torch.zeros(1)})
    assert not is_multi_head(torch.zeros(1))


def test_like_output_follows_the_reference_shape() -> None:
    value = torch.ones(2)
    assert like_output({"any": value}, torch.zeros(2)) is value
    assert like_output({"any": value}, {"semantic": torch.zeros(2)}) == {"any": value}
    with pytest.raises(ValueError, match="single-output"):
        like_output({"a": value, "b": value}, torch.zeros(2))


def test_map_heads_keeps_tensors_tensors_and_dicts_dicts() -> None:
    doubled = map_heads(torch.ones(2), lambda t: t * 2)
    assert isinstance(doubled, torch.Tensor) and doubled.tolist() == [2.0, 2.0]
    out = map_heads({"semantic": torch.ones(1), "geometric": torch.zeros(1)}, lambda t: t + 1)
    assert list(out) == ["semantic", "geometric"]
    assert out["semantic"].item() == 2.0 and out["geometric"].item() == 1.0


def test_primary_output_picks_the_primary_head_or_the_first() -> None:
    semantic, geometric = torch.zeros(1), torch.ones(1)
    assert primary_output({"geometric": geometric, "semantic": semantic}) is semantic
    assert primary_output({"geometric": geometric}) is geometric
    assert primary_output(semantic) is semantic


def test_shared_trunk_model_is_recognised_by_its_three_members() -> None:
    class Split(nn.Module):
        trunk_module_names = ("body",)

        def trunk_features(self, x):
            return x

        def score_features(self, shared, x):
            return shared

    assert isinstance(Split(), SharedTrunkModel)
    assert not isinstance(nn.Conv2d(3, 3, 1), SharedTrunkModel)


def test_vocabularies_map_legacy_spellings_and_reject_unknown_ones() -> None:
    assert upsample_mode("deconv") == "deconv_frozen"
    assert fcn_variant("8s") == "fcn8s"
    with pytest.raises(ModelOptionError, match="upsample"):
        upsample_mode("nearest")
    with pytest.raises(ModelOptionError, match="variant"):
        fcn_variant("fcn4s", ("fcn32s",))
