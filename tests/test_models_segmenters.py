"""Registration walks heads x backbones: every row on every encoder, options read from the head."""

from __future__ import annotations

import inspect

import pytest
import torch

from fcnseg.errors import ModelOptionError
from fcnseg.models import build_model, list_models, model_info
from fcnseg.models.backbones import BACKBONES
from fcnseg.models.factory import accepted_options, check_model_options
from fcnseg.models.heads import HEADS, SkipFCN
from fcnseg.models.segmenters import BUILDERS, build_fcn, head_options
from fcnseg.models.shell import SegmentationShell


def test_every_head_row_is_registered_for_every_backbone():
    """Every backbone, or those the row names (`HeadRow.encoders`: DeepLab's ASPP needs the
    atrous output stride 8, which the torchvision encoders have)."""
    expected = set()
    for head, row in HEADS.items():
        for encoder, entry in BACKBONES.items():
            if row.encoders is not None and encoder not in row.encoders:
                assert f"{next(iter(row.presets))}_{encoder}" not in list_models()
                continue
            for prefix, options in row.presets.items():
                info = model_info(f"{prefix}_{encoder}")
                assert info.builder is BUILDERS[head]
                assert info.family == f"{row.family}-{encoder}"
                assert info.description.endswith(f" on {entry.description}")
                assert info.defaults == {"encoder": encoder, **options, **entry.model_defaults}
                assert info.paper_stage == row.paper_stages.get(prefix)
                expected.add(info.name)
    assert expected <= set(list_models())
    # fcn32s..fcn4s, fpnlite, unet, pspnet and linknet per encoder; deeplab_aspp on the four
    # torchvision encoders with the atrous option
    assert len(expected) == (4 + 1 + 1 + 1 + 1) * len(BACKBONES) + 4


def test_fcn_rows_keep_their_names_and_paper_stages():
    stages = {"fcn32s": "fcn32s", "fcn16s": "fcn16s", "fcn8s": "fcn8s", "fcn4s": "fcn8s"}
    for encoder in ("efficientnet_lite0", "resnet18", "resnet50", "resnet101", "mobilenet_v2"):
        for variant, stage in stages.items():
            info = model_info(f"{variant}_{encoder}")
            assert info.paper_stage == stage and info.defaults["variant"] == variant
    timm = model_info("fcn8s_timm")
    assert timm.defaults["timm_name"] == "convnext_atto" and timm.defaults["pretrained"] is False
    assert not timm.weights_available()
    model = build_model("fcn32s_efficientnet_lite0", 2, pretrained=False)
    assert type(model) is SkipFCN and isinstance(model, SegmentationShell)
    assert model.variant == "fcn32s" and model.head.score_fr.score.out_channels == 2
    assert type(build_model("fpnlite_resnet18", 2, pretrained=False)) is SegmentationShell


def test_pspnet_names_default_to_the_dilated_encoder_and_linknet_names_do_not():
    for encoder in BACKBONES:
        assert model_info(f"pspnet_{encoder}").defaults["output_stride"] == 8
        assert "output_stride" not in model_info(f"linknet_{encoder}").defaults
    assert model_info("pspnet_resnet18").family == "pspnet-resnet18"
    assert accepted_options("pspnet_resnet18") >= {"bottleneck_channels", "aux_channels"}
    assert "final_channels" in accepted_options("linknet_resnet18")


def test_options_are_the_shell_options_plus_the_heads_own():
    shell = {"encoder", "pretrained", "encoder_weights", "output_stride", "timm_name"}
    shell |= {"input_scale", "in_channels", "normalization"}
    shell |= {"crf"}  # every model: the factory's mean-field CRF wrapper (models/meanfield.py)
    assert accepted_options("fcn8s_resnet18") == shell | {"variant", "head_channels", "upsample"}
    assert accepted_options("fpnlite_resnet18") == shell | {"pyramid_channels"}
    assert [p.name for p in head_options(HEADS["fpnlite"].head)] == ["pyramid_channels"]
    with pytest.raises(ModelOptionError, match="unknown key 'variant' for model 'fpnlite_"):
        check_model_options("fpnlite_resnet18", {"variant": "fcn8s"})
    parameters = inspect.signature(build_fcn).parameters
    assert parameters["variant"].default == "fcn8s" and parameters["pretrained"].default is False


def test_the_builder_names_the_model_in_its_errors():
    with pytest.raises(ModelOptionError, match=r"fcn16s_timm: unknown option\(s\) \['colour'\]"):
        build_fcn(3, encoder="timm", variant="16s", colour="red")
    with pytest.raises(ModelOptionError, match="variant='2s'"):
        build_fcn(3, encoder="resnet18", variant="2s", pretrained=False)


def test_the_second_head_builds_on_a_real_encoder_and_keeps_the_input_size():
    model = build_model("fpnlite_mobilenet_v2", 4, pretrained=False, pyramid_channels=16).eval()
    assert model.head.lateral["s8"].out_channels == 16
    with torch.no_grad():
        assert model(torch.randn(1, 3, 45, 67)).shape == (1, 4, 45, 67)
