# size: every paper and release constant with its source, in one file by design (auditable in one place)
"""Every numeric constant fcnseg takes from a paper or a reference release, once, with its source.

Keeping them here makes the faithfulness to the FCN paper auditable in one file: a reviewer can
check each number against the cited source without reading the models or the engine.
"""

from __future__ import annotations

from dataclasses import dataclass

# --- Long, Shelhamer, Darrell, "Fully Convolutional Networks for Semantic Segmentation",
# --- CVPR 2015 / TPAMI 2016, and the authors' Caffe release (shelhamer/fcn.berkeleyvision.org).

#: conv1_1 of the VGG16 / AlexNet / GoogLeNet FCNs is padded by 100 so that the 7x7 fc6 has
#: support on small inputs; the crops below undo it (Caffe prototxts, `pad: 100`).
FCN_CONV1_PAD: int = 100
#: fc6 becomes a 7x7 convolution with 4096 outputs, fc7 a 1x1 with 4096 (paper section 3.1).
FCN_FC6_KERNEL: int = 7
FCN_FC_CHANNELS: int = 4096
#: Dropout after fc6 and fc7, as in the classifier (Caffe prototxts, `dropout_ratio: 0.5`).
FCN_DROPOUT: float = 0.5
#: "At-once" FCN-8s scales the pool4 / pool3 features before scoring (Caffe `scale_pool4`,
#: `scale_pool3` layers in voc-fcn8s-atonce) so that all streams learn at similar rates.
FCN_ATONCE_POOL4_SCALE: float = 0.01
FCN_ATONCE_POOL3_SCALE: float = 0.0001
#: Crop offsets produced by Caffe's coordinate mapping for the VGG16 nets; fcnseg derives them
#: from the layer geometry and tests that the derivation reproduces these values.
FCN_KNOWN_CROP_OFFSETS: dict[str, dict[str, int]] = {
    "fcn32s": {"final": 19},
    "fcn16s": {"pool4": 5, "final": 27},
    "fcn8s": {"pool4": 5, "pool3": 9, "final": 31},
}
#: The paper times inference on a 500 x 500 input (Table 1, "forward time ... 500 x 500 input"),
#: the largest side of PASCAL VOC images.
PAPER_TIMING_SIZE: int = 500
#: Ignore label of the PASCAL VOC ground truth (VOC devkit; FCN `loss_param.ignore_label: 255`).
VOC_IGNORE_INDEX: int = 255
#: Solver of the paper (section 4.1 and the release's solver.prototxt): momentum 0.99 with batch 1
#: and an unnormalised loss; weight decay 5e-4; fixed learning rates per stage.
PAPER_MOMENTUM: float = 0.99
PAPER_WEIGHT_DECAY: float = 5e-4
PAPER_BATCH_SIZE: int = 1
#: Keyed by `ModelInfo.paper_stage`. "fcn8s_atonce" is the FCN-8s trained in one stage from the
#: ImageNet classifier (TPAMI 2016 section 4.2; voc-fcn8s-atonce/solver.prototxt `base_lr:
#: 1e-10`): it starts where FCN-32s starts, so it takes the first stage's rate, not FCN-8s's.
PAPER_LR: dict[str, float] = {
    "fcn32s": 1e-10,
    "fcn16s": 1e-12,
    "fcn8s": 1e-14,
    "fcn8s_atonce": 1e-10,
}
#: The paper's effective batch when training with batch 1 was 20 images (section 4.1,
#: "minibatches of 20 images"); gradient accumulation reproduces it.
PAPER_EFFECTIVE_BATCH: int = 20

# --- DeepLab front end (Chen, Papandreou, Kokkinos, Murphy, Yuille: "Semantic Image Segmentation
# --- with Deep Convolutional Nets and Fully Connected CRFs", ICLR 2015 (v1); "DeepLab: ...
# --- Atrous Convolution, and Fully Connected CRFs", TPAMI 2018 (v2)), from the authors' released
# --- Caffe prototxts as mirrored on GitHub:
# ---   v1 DeepLab-LargeFOV: TheLegendAli/DeepLab-Context @ f6d04455499399b778a4fb70ca0a9961efb220c9,
# ---     config/DeepLab-LargeFOV/test.prototxt (`hole: 12`, pool5a);
# ---   v2 DeepLab-ASPP VGG16 (the authors' template, `fc8_${EXP}_1` ...): xmojiao/deeplab_v2 @
# ---     bdec46ce9c1b893e1c8511b56e56e2c0da79e50d, pascal-context/config/deeplab_largeFOV/
# ---     train.prototxt; instantiated for VOC (EXP=voc12, 21 labels) with its solver:
# ---     talent518/deeplab-public-ver2 @ 0d878f33a6656d05e3aee824086f8c3eb0d9c2e3,
# ---     exper/voc12/config/vgg16/train_train.prototxt and solver_train.prototxt.
#: pool1-3 are 3x3 max pools with stride 2 and pad 1 ("we also change max pooling size in the
#: first 4 layers from 2 to 3 while retaining stride = 2"); pool4 and pool5 are 3x3, stride 1,
#: pad 1. Output stride 8. (kernel, stride, pad)
DEEPLAB_POOL_STRIDE2: tuple[int, int, int] = (3, 2, 1)
DEEPLAB_POOL_STRIDE1: tuple[int, int, int] = (3, 1, 1)
DEEPLAB_OUTPUT_STRIDE: int = 8
#: conv5_1..conv5_3: `pad: 2` `dilation: 2` (v1 `hole: 2`).
DEEPLAB_CONV5_DILATION: int = 2
#: LargeFOV: pool5a, a 3x3 average pool (stride 1, pad 1), then fc6 3x3 with `hole: 12`,
#: `pad: 12`, 1024 outputs; fc7 1x1 1024; dropout 0.5 after each; fc8_${EXP} 1x1 to the labels.
DEEPLAB_LARGEFOV_RATE: int = 12
DEEPLAB_FC_CHANNELS: int = 1024
DEEPLAB_FC6_KERNEL: int = 3
DEEPLAB_DROPOUT: float = 0.5
#: ASPP (v2): four fc6_i (3x3, dilation = pad = 6, 12, 18, 24) -> fc7_i -> fc8_${EXP}_i branches
#: on pool5, summed by an Eltwise SUM named fc8_${EXP}. The ResNet-101 ASPP of v2 scores each
#: rate directly (fc1_voc12_c0 ... c3: one 3x3 dilated convolution to the labels, `lr_mult`
#: 10/20, summed as fc1_voc12): DrSleep/tensorflow-deeplab-resnet @
#: 32d66d4f41e669c96c5f29016672de3648819423, misc/deploy.prototxt (the release's deploy net).
DEEPLAB_ASPP_RATES: tuple[int, ...] = (6, 12, 18, 24)
#: The scorer's name suffix of the VOC nets (`fc8_${EXP}` with EXP=voc12).
DEEPLAB_EXPERIMENT: str = "voc12"
#: Test-time interpolation: INTERP `zoom_factor: 8`, i.e. (n - 1) * 8 + 1 outputs from n scores
#: (bilinear between score centres, which lie on input pixels 0, 8, 16, ...).
DEEPLAB_ZOOM_FACTOR: int = 8
#: Training crop (`crop_size: 321` = 32 * 10 + 1) and test crop (`crop_size: 513`).
DEEPLAB_TRAIN_CROP: int = 321
DEEPLAB_TEST_CROP: int = 513
#: v2 VGG16 solver (solver_train.prototxt): `lr_policy: "poly"` `power: 0.9` `base_lr: 1e-3`
#: `max_iter: 20000` `momentum: 0.9` `weight_decay: 0.0005`; `batch_size: 10`; every conv has
#: `lr_mult: 1`/`2`, `decay_mult: 1`/`0` but fc8_* `lr_mult: 10`/`20`. SoftmaxWithLoss keeps
#: Caffe's default normalisation (mean over the valid pixels). The v1 LargeFOV solver is
#: `lr_policy: "step"` over `max_iter: 6000` (TheLegendAli/DeepLab-Context, config/DeepLab-
#: LargeFOV/solver.prototxt: stepsize 1000 gamma 0.1 @ 4f2de8c7, stepsize 2000 gamma 0.316 @
#: 12df7fc5); v2 reports poly better than step (TPAMI 2018, its learning-rate policy
#: comparison on VOC val), so both presets use the v2 solver.
DEEPLAB_BASE_LR: float = 1e-3
DEEPLAB_MOMENTUM: float = 0.9
DEEPLAB_WEIGHT_DECAY: float = 5e-4
DEEPLAB_POLY_POWER: float = 0.9
DEEPLAB_MAX_ITER: int = 20000
DEEPLAB_BATCH_SIZE: int = 10
DEEPLAB_SCORE_LR_MULT: float = 10.0

# --- The release's solvers (shelhamer/fcn.berkeleyvision.org, each folder's solver.prototxt
# --- and net.py), reproduced by the `release` training preset.
#: Every release solver is `lr_policy: "fixed"` with `weight_decay: 0.0005`. `normalize` is the
#: SoftmaxWithLoss `loss_param.normalize` of net.py (False: summed over pixels, divided by the
#: batch size only; True: averaged over the labelled pixels). `iter_size` is Caffe's gradient
#: accumulation: the diffs of `iter_size` forward/backward passes are summed and scaled by
#: 1 / iter_size before the update. `bias_mult_layers` says whose biases carry the
#: `param { lr_mult: 2 decay_mult: 0 }` of net.py: "all" (every convolution of the VGG16 nets,
#: score layers included) or "score" (voc-fcn-alexnet: only score_fr declares it; its conv1-5 and
#: fc6/fc7 biases train at lr_mult 1 with weight decay). Weights are `lr_mult: 1 decay_mult: 1`;
#: the deconvolutions `lr_mult: 0` (fcnseg's frozen bilinear upsampling).
RELEASE_BIAS_LR_MULT: float = 2.0
RELEASE_BIAS_DECAY_MULT: float = 0.0
RELEASE_WEIGHT_DECAY: float = 5e-4


@dataclass(frozen=True)
class ReleaseSolver:
    """One release net's solver.prototxt and loss setting (see the comment above).

    The fields after `weight_decay` are what the DeepLab solvers add (their defaults are the FCN
    release's): `lr_policy: "poly"` with `power`, `max_iter`, the data layer's `batch_size`, and
    the `lr_mult` of the class scorers' weights (`score_lr_mult`; their biases take it times
    `RELEASE_BIAS_LR_MULT`, i.e. DeepLab's fc8 `lr_mult: 10` / `lr_mult: 20`).
    """

    base_lr: float
    momentum: float
    iter_size: int
    normalize: bool
    bias_mult_layers: str = "all"
    weight_decay: float = RELEASE_WEIGHT_DECAY
    schedule: str = "fixed"
    poly_power: float = 0.9
    max_iter: int | None = None
    batch_size: int = 1
    score_lr_mult: float = 1.0
    #: `loss_normalization` of the preset: None derives it from `normalize` ("mean" / "sum").
    loss_normalization: str | None = None


_VGG_32S = ReleaseSolver(base_lr=1e-10, momentum=0.99, iter_size=1, normalize=False)
_VGG_16S = ReleaseSolver(base_lr=1e-12, momentum=0.99, iter_size=1, normalize=False)
_VGG_8S = ReleaseSolver(base_lr=1e-14, momentum=0.99, iter_size=1, normalize=False)
#: Release net (folder name) -> its solver. Facts per folder, checked against solver.prototxt:
#: voc-fcn32s 1e-10, voc-fcn16s 1e-12, voc-fcn8s 1e-14, voc-fcn8s-atonce 1e-10 (all momentum 0.99,
#: "no gradient accumulation", unnormalised); voc-fcn-alexnet "lr for normalized softmax" 1e-4,
#: "standard momentum" 0.9, iter_size 20, normalize: True; pascalcontext-* as voc-*; siftflow-
#: fcn32s 1e-10, fcn16s 1e-12 and fcn8s 1e-12 (not 1e-14); nyud-fcn32s-color / -hha / -color-d
#: 1e-10, nyud-fcn32s-color-hha 1e-12.
RELEASE_SOLVERS: dict[str, ReleaseSolver] = {
    "voc-fcn32s": _VGG_32S,
    "voc-fcn16s": _VGG_16S,
    "voc-fcn8s": _VGG_8S,
    "voc-fcn8s-atonce": _VGG_32S,
    "voc-fcn-alexnet": ReleaseSolver(
        base_lr=1e-4, momentum=0.9, iter_size=20, normalize=True, bias_mult_layers="score"
    ),
    "pascalcontext-fcn32s": _VGG_32S,
    "pascalcontext-fcn16s": _VGG_16S,
    "pascalcontext-fcn8s": _VGG_8S,
    "siftflow-fcn32s": _VGG_32S,
    "siftflow-fcn16s": _VGG_16S,
    "siftflow-fcn8s": _VGG_16S,
    "nyud-fcn32s-color": _VGG_32S,
    "nyud-fcn32s-hha": _VGG_32S,
    "nyud-fcn32s-color-d": _VGG_32S,
    "nyud-fcn32s-color-hha": _VGG_16S,
    # DeepLab (the DeepLab section above has the sources): one v2 solver for both VGG16 nets.
    **{
        net: ReleaseSolver(
            base_lr=DEEPLAB_BASE_LR,
            momentum=DEEPLAB_MOMENTUM,
            iter_size=1,
            normalize=True,
            weight_decay=DEEPLAB_WEIGHT_DECAY,
            schedule="poly",
            poly_power=DEEPLAB_POLY_POWER,
            max_iter=DEEPLAB_MAX_ITER,
            batch_size=DEEPLAB_BATCH_SIZE,
            score_lr_mult=DEEPLAB_SCORE_LR_MULT,
        )
        for net in ("deeplab-largefov", "deeplab-aspp-vgg16")
    },
    **{
        f"camvid-{net}": ReleaseSolver(
            base_lr=base_lr,
            momentum=0.9,
            iter_size=1,
            normalize=True,
            batch_size=4,
            max_iter=max_iter,
            loss_normalization="pixels",
            bias_mult_layers="conv",
        )
        for net, base_lr, max_iter in (
            ("segnet", 1e-3, 40_000),
            ("segnet-basic", 0.1, 10_000),
            ("bayesian-segnet", 1e-3, 60_000),
            ("bayesian-segnet-basic", 0.1, 10_000),
        )
    },
}
#: The SegNet solvers above (SegNet-Tutorial Models/segnet_solver.prototxt, segnet_basic_solver,
#: bayesian_segnet_solver, bayesian_segnet_basic_solver): base_lr 0.001 (VGG16) / 0.1 (Basic),
#: momentum 0.9, weight_decay 0.0005, lr_policy "step" with gamma 1.0 (a fixed rate), max_iter
#: 40000 / 10000 / 60000 / 10000, batch_size 4 (DenseImageData), no iter_size. Every convolution
#: declares `param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }`; the BN
#: layers declare none (scale and shift at lr_mult 1 with weight decay): bias_mult_layers "conv".
#: The release's parameter count of voc-fcn-alexnet (21 classes), upscore's 21 x 21 x 63 x 63
#: deconvolution included: conv1-5 2,334,080, fc6 37,752,832, fc7 16,781,312, score_fr 86,037,
#: upscore 1,750,329.
RELEASE_ALEXNET_PARAMETERS: int = 58_704_590
#: CaffeNet (the release's AlexNet, voc-fcn-alexnet/net.py): conv output widths, kernels,
#: strides, paddings and groups; LRN (local_size 5, alpha 1e-4, beta 0.75) after pool1 and pool2;
#: 3x3 stride-2 max pooling after conv1, conv2 and conv5; fc6 is a 6x6 convolution.
CAFFENET_CONVS: tuple[tuple[int, int, int, int, int], ...] = (
    # (out channels, kernel, stride, pad, group)
    (96, 11, 4, FCN_CONV1_PAD, 1),
    (256, 5, 1, 2, 2),
    (384, 3, 1, 1, 1),
    (384, 3, 1, 1, 2),
    (256, 3, 1, 1, 2),
)
CAFFENET_POOL_KERNEL: int = 3
CAFFENET_POOL_STRIDE: int = 2
CAFFENET_LRN: tuple[int, float, float, float] = (5, 1e-4, 0.75, 1.0)  # size, alpha, beta, k
CAFFENET_FC6_KERNEL: int = 6
#: Caffe VGG16 mean pixel, BGR order, 0-255 scale (the release's voc_layers.py `mean_bgr`).
CAFFE_MEAN_BGR: tuple[float, float, float] = (104.00698793, 116.66876762, 122.67891434)
#: Size of the VOC2011 "seg11valid" split used by FCN for validation (the release's data/pascal).
VOC_SEG11VALID_SIZE: int = 736
#: SIFT Flow split of the paper: 2488 training and 200 test images; 33 semantic, 3 geometric
#: classes (paper section 4.3).
SIFTFLOW_TRAIN_SIZE: int = 2488
SIFTFLOW_TEST_SIZE: int = 200
SIFTFLOW_NUM_SEMANTIC: int = 33
SIFTFLOW_NUM_GEOMETRIC: int = 3
#: NYUDv2: 40 classes (Gupta et al. 2013 labels); 795 train / 654 test (standard split); the
#: paper's reduced training used 381 / 414 (paper section 4.3).
NYUD_NUM_CLASSES: int = 40

# --- ImageNet normalisation used by torchvision and timm weights (torchvision docs).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: TensorFlow EfficientNet-Lite weights expect inputs scaled to [-1, 1] (mean 0.5, std 0.5;
#: timm's `tf_efficientnet_lite*` pretrained configs).
TF_LITE_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
TF_LITE_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)

# --- CamVid, 11-class SegNet split (Brostow et al. 2008; Badrinarayanan et al., SegNet 2017).
CAMVID_NUM_CLASSES: int = 11
CAMVID_VOID: int = 11
CAMVID_CLASSES: tuple[str, ...] = (
    "Sky",
    "Building",
    "Pole",
    "Road",
    "Pavement",
    "Tree",
    "SignSymbol",
    "Fence",
    "Car",
    "Pedestrian",
    "Bicyclist",
)
CAMVID_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 128, 128),
    (128, 0, 0),
    (192, 192, 128),
    (128, 64, 128),
    (60, 40, 222),
    (128, 128, 0),
    (192, 128, 128),
    (64, 64, 128),
    (64, 0, 128),
    (64, 64, 0),
    (0, 128, 192),
)
#: Split sizes of the SegNet CamVid release (SegNet-Tutorial/CamVid).
CAMVID_SPLIT_SIZES: dict[str, int] = {"train": 367, "val": 101, "test": 233}
#: Native CamVid (SegNet release) resolution, height x width.
CAMVID_SIZE_HW: tuple[int, int] = (360, 480)

# --- SegNet (Badrinarayanan, Kendall, Cipolla, TPAMI 2017) and Bayesian SegNet (Kendall,
# --- Badrinarayanan, Cipolla, BMVC 2017) as released in alexgkendall/SegNet-Tutorial (commit
# --- bb68b64e72cb004b3ed927fee0f5624dd8097498: Models/segnet_train.prototxt,
# --- segnet_basic_train.prototxt, bayesian_segnet_train.prototxt, bayesian_segnet_basic_train
# --- .prototxt and their *_solver.prototxt) on the caffe fork alexgkendall/caffe-segnet (commit
# --- 344c113bf1832886f1cbe9f33ffe28a3beeaf412: src/caffe/layers/bn_layer.cpp, upsample_layer.cpp,
# --- softmax_loss_layer.cpp).
#: SegNet's encoder: VGG16's 13 convolutions (3x3, pad 1), each followed by BN and ReLU, in five
#: blocks closed by 2x2 stride-2 max pooling whose indices (`poolN_mask`) feed the decoder.
SEGNET_VGG16_BLOCKS: tuple[tuple[int, ...], ...] = (
    (64, 64),
    (128, 128),
    (256, 256, 256),
    (512, 512, 512),
    (512, 512, 512),
)
#: SegNet-Basic: four 7x7 (pad 3) convolutions of 64 channels in the encoder and four in the
#: decoder, an LRN of the input image (local_size 5, alpha 1e-4, beta 0.75; Caffe's k = 1).
SEGNET_BASIC_CHANNELS: int = 64
SEGNET_BASIC_DEPTH: int = 4
SEGNET_BASIC_KERNEL: int = 7
SEGNET_BASIC_LRN: tuple[int, float, float, float] = (5, 1e-4, 0.75, 1.0)  # size, alpha, beta, k
#: Initial value of the BN shift (`shift_filler`): 0.001 in the SegNet nets, 0 in the Bayesian
#: ones; the scale starts at 1 and convolutions use the "msra" filler with zero biases.
SEGNET_BN_SHIFT_INIT: float = 0.001
BAYESIAN_SEGNET_BN_SHIFT_INIT: float = 0.0
#: caffe-segnet's BN layer adds `var_eps_ = 1e-9` to the batch variance. fcnseg keeps PyTorch's
#: 1e-5 instead: 1e-9 underflows to 0 in float16 (AMP) and only matters for channels of
#: near-zero variance; an imported caffemodel's folded scale/shift does not depend on it.
SEGNET_RELEASE_BN_EPS: float = 1e-9
#: Dropout of Bayesian SegNet ("dropout_ratio: 0.5"): after pool3, pool4, pool5 (encdrop3-5) and
#: after the ReLU closing decoder blocks 5, 4, 3 (decdrop5-3); Bayesian SegNet-Basic: after
#: pool3 and pool4 (encdrop3-4) and after conv_decode4_bn and conv_decode3_bn (decdrop4-3).
BAYESIAN_SEGNET_DROPOUT: float = 0.5
#: The median-frequency class weights of the release's CamVid loss (`loss_param {
#: weight_by_label_freqs: true class_weighting: ... }`, identical in all four train prototxts),
#: in CAMVID_CLASSES order; `ignore_label: 11` (CAMVID_VOID).
SEGNET_CAMVID_CLASS_WEIGHTS: tuple[float, ...] = (
    0.2595,
    0.1826,
    4.5640,
    0.1417,
    0.9051,
    0.3826,
    9.6446,
    1.8418,
    0.6823,
    6.2478,
    7.3614,
)
#: caffe-segnet's SoftmaxWithLoss with `weight_by_label_freqs` sums weight x -log p over the
#: labelled pixels and divides by their count (`normalize` defaults to true), not by the sum of
#: their weights as torch's weighted mean does: fcnseg's `loss_normalization: pixels`.

# --- Dense CRF post-processing of DeepLab (Chen et al., "DeepLab: Semantic Image Segmentation
# --- with Deep Convolutional Nets, Atrous Convolution, and Fully Connected CRFs", TPAMI 2018,
# --- section 3.2 and 4.1; Kraehenbuehl & Koltun, NIPS 2011). Used by fcnseg.inference.crf.
#: Smoothness (position-only Gaussian) kernel: "we use default values of w2 = 3 and
#: sigma_gamma = 3" (DeepLab TPAMI section 4.1).
DEEPLAB_CRF_GAUSSIAN_SXY: float = 3.0
DEEPLAB_CRF_GAUSSIAN_COMPAT: float = 3.0
#: Appearance (bilateral) kernel w1, sigma_alpha (position), sigma_beta (RGB): cross-validated
#: per model in DeepLab; these are the released DeepLab-v2 ResNet-101 PASCAL VOC values
#: (bi_w 4, bi_xy_std 67, bi_rgb_std 3).
DEEPLAB_CRF_BILATERAL_COMPAT: float = 4.0
DEEPLAB_CRF_BILATERAL_SXY: float = 67.0
DEEPLAB_CRF_BILATERAL_SRGB: float = 3.0
#: DeepLab runs 10 mean-field iterations (TPAMI section 4.1). fcnseg's `crf_refine` defaults to
#: 5 for speed; pass iterations=DEEPLAB_CRF_ITERATIONS to reproduce DeepLab's setting.
DEEPLAB_CRF_ITERATIONS: int = 10
#: DeepLab's parameter search (Chen et al., "Semantic Image Segmentation with Deep Convolutional
#: Nets and Fully Connected CRFs", ICLR 2015, section 4.1): w2 = 3 and sigma_gamma = 3 fixed, 10
#: iterations, w1 / sigma_alpha / sigma_beta cross-validated on 100 val images, coarse to fine:
#: first w1 in [5, 10], sigma_alpha in [50:10:100], sigma_beta in [3:6] (MATLAB notation; w1
#: taken here in steps of 1), then finer steps around the best. `fcnseg crf-search` defaults.
DEEPLAB_CRF_SEARCH_W1: tuple[float, ...] = (5.0, 6.0, 7.0, 8.0, 9.0, 10.0)
DEEPLAB_CRF_SEARCH_THETA_ALPHA: tuple[float, ...] = (50.0, 60.0, 70.0, 80.0, 90.0, 100.0)
DEEPLAB_CRF_SEARCH_THETA_BETA: tuple[float, ...] = (3.0, 4.0, 5.0, 6.0)
DEEPLAB_CRF_SEARCH_IMAGES: int = 100

# --- SIFT Flow class lists (Liu, Yuen, Torralba, "Nonparametric scene parsing", CVPR 2009 /
# --- TPAMI 2011; the dataset's classes.mat). Label files hold 1-based ids, 0 = unlabelled; the
# --- FCN release (siftflow_layers.py) shifts them by -1 so that void becomes 255.
SIFTFLOW_SEMANTIC_CLASSES: tuple[str, ...] = (
    "awning", "balcony", "bird", "boat", "bridge", "building", "bus", "car", "cow", "crosswalk",
    "desert", "door", "fence", "field", "grass", "moon", "mountain", "person", "plant", "pole",
    "river", "road", "rock", "sand", "sea", "sidewalk", "sign", "sky", "staircase",
    "streetlight", "sun", "tree", "window",
)
SIFTFLOW_GEOMETRIC_CLASSES: tuple[str, ...] = ("sky", "horizontal", "vertical")
#: Folder of the SIFT Flow release holding the 256x256 images and label files.
SIFTFLOW_SUBDIR: str = "spatial_envelope_256x256_static_8outdoorcategories"

# --- NYUDv2 (Silberman et al. ECCV 2012) with the 40-class labels of Gupta, Arbelaez, Malik,
# --- CVPR 2013, as used by FCN (nyud_layers.py: labels 1-40, 0 = void).
NYUD_CLASSES: tuple[str, ...] = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor mat", "clothes", "ceiling", "books", "refrigerator", "television", "paper", "towel",
    "shower curtain", "box", "whiteboard", "person", "night stand", "toilet", "sink", "lamp",
    "bathtub", "bag", "otherstructure", "otherfurniture", "otherprop",
)
#: Mean of log(depth in mm), from the FCN release's nyud_layers.py (`mean_logd`).
NYUD_MEAN_LOG_DEPTH_MM: float = 7.844
#: Intrinsics of the NYUDv2 Kinect colour camera in pixels (NYU Depth V2 toolbox,
#: camera_params.m: fx_rgb, fy_rgb, cx_rgb, cy_rgb; MATLAB 1-based pixel coordinates). Gupta's
#: rcnn-depth code (getCameraParam('color')) uses the same matrix for HHA.
NYUD_FX: float = 518.857901
NYUD_FY: float = 519.469611
NYUD_CX: float = 325.582449
NYUD_CY: float = 253.736166

# --- HHA encoding (Gupta, Girshick, Arbelaez, Malik, ECCV 2014; rcnn-depth saveHHA.m and
# --- processDepthImage.m).
#: Disparity channel = 31000 / depth in cm, with depth clamped below at 100 cm.
HHA_DISPARITY_NUMERATOR_CM: float = 31000.0
HHA_MIN_DEPTH_CM: float = 100.0
#: Angle channel = angle with gravity in degrees + 128 - 90 ("keeping some slack").
HHA_ANGLE_OFFSET_DEG: float = 128.0 - 90.0
#: Height is measured from the lowest point; if that is less than 90 cm below the camera the
#: floor is taken not to be visible and the camera is assumed 130 cm above it.
HHA_MIN_FLOOR_DROP_CM: float = 90.0
HHA_DEFAULT_CAMERA_HEIGHT_CM: float = 130.0
#: Gravity estimation: two rounds with angle thresholds 45 then 15 degrees, 5 iterations each.
HHA_GRAVITY_ANGLE_THRESHOLDS_DEG: tuple[float, float] = (45.0, 15.0)
HHA_GRAVITY_ITERATIONS: tuple[int, int] = (5, 5)
#: Square supports for the normals (processDepthImage normalParam.patchSize = [3 10], read as
#: half-widths): the small one gives per-pixel normals, the large one those for gravity.
HHA_NORMAL_HALF_WIDTH: int = 3
HHA_GRAVITY_HALF_WIDTH: int = 10

# --- Dataset facts used by fcnseg.data (class lists, label encodings), with their sources.

#: PASCAL VOC 2012 segmentation classes, index = label value (VOC devkit, VOCinit.m).
VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)
#: Cityscapes evaluation classes and colours (cityscapesScripts, helpers/labels.py: the 19
#: labels with trainId 0-18, in trainId order).
CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)
CITYSCAPES_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
)
#: Cityscapes `labelIds` -> `trainIds` (cityscapesScripts, helpers/labels.py); every id not
#: listed (unlabeled, ego vehicle, ..., parking, rail track, guard rail, bridge, tunnel,
#: polegroup, caravan, trailer, license plate) has trainId 255 = ignored in evaluation.
CITYSCAPES_ID_TO_TRAINID: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
    25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
CITYSCAPES_IGNORE_INDEX: int = 255
#: PASCAL-Context, the 59 most frequent classes (Mottaghi et al., CVPR 2014; the 59-class
#: list used by FCN section 4.3 and later benchmarks), label value c+1 in the label files
#: (0 = everything else, treated as void).
PASCAL_CONTEXT_59_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "table", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor", "bag", "bed", "bench", "book", "building", "cabinet", "ceiling", "cloth",
    "computer", "cup", "door", "fence", "floor", "flower", "food", "grass", "ground",
    "keyboard", "light", "mountain", "mouse", "curtain", "platform", "sign", "plate", "road",
    "rock", "shelves", "sidewalk", "sky", "snow", "bedclothes", "track", "tree", "truck",
    "wall", "water", "window", "wood",
)
#: ADE20K SceneParsing (ADEChallengeData2016) 150 classes, label value c+1 in the annotation
#: PNGs (0 = "other", void); names as in the challenge's objectInfo150 (first name of each).
ADE20K_CLASSES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane",
    "grass", "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant",
    "curtain", "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror",
    "rug", "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter",
    "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs",
    "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track",
    "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer",
    "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag",
    "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave",
    "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate",
    "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)

# --- Ronneberger, Fischer, Brox, "U-Net: Convolutional Networks for Biomedical Image
# --- Segmentation", MICCAI 2015 (arXiv:1505.04597), section 2 and figure 1.
#: Channels of the five levels of the contracting path (figure 1: 64, 128, 256, 512, 1024).
UNET2015_CHANNELS: tuple[int, ...] = (64, 128, 256, 512, 1024)
#: The tile of figure 1: a 572 x 572 input gives a 388 x 388 segmentation map.
UNET2015_TILE_INPUT: int = 572
UNET2015_TILE_OUTPUT: int = 388
#: Pixels of context lost on each side ((572 - 388) / 2): the border the overlap-tile strategy
#: fills by mirroring the image (section 2, figure 2).
UNET2015_CONTEXT: int = 92
#: Dropout at the end of the contracting path (section 3.1; ratio 0.5 as in the release).
UNET2015_DROPOUT: float = 0.5
#: The border-weight map of the loss (section 3, equation 2): w0 = 10, sigma ~ 5 pixels.
UNET2015_BORDER_W0: float = 10.0
UNET2015_BORDER_SIGMA: float = 5.0

# --- PSPNet (Zhao et al., "Pyramid Scene Parsing Network", CVPR 2017) and the authors' PyTorch
# --- release hszhao/semseg (model/pspnet.py at 5e5a0ba7a1fa2cc06f3e8c060cbedff08e160d33).
#: Pyramid bins (paper section 3.2: "1x1, 2x2, 3x3 and 6x6"); each branch reduces the
#: channels to C / len(bins) with a 1x1 convolution (paper: "1/N of the original").
PSPNET_BINS: tuple[int, ...] = (1, 2, 3, 6)
#: The classifier after the concatenation: 3x3 conv to 512, BN, ReLU, dropout 0.1, 1x1 score
#: (semseg `cls`); the auxiliary head on the stride-16 stage: 3x3 conv to 256, same tail (`aux`).
PSPNET_BOTTLENECK_CHANNELS: int = 512
PSPNET_AUX_CHANNELS: int = 256
PSPNET_DROPOUT: float = 0.1
#: Weight of the auxiliary loss (paper section 3.3: "weight 0.4"; semseg `aux_weight: 0.4`).
PSPNET_AUX_WEIGHT: float = 0.4
#: The dilated encoder's output stride (paper section 4: "dilated network ... 1/8").
PSPNET_OUTPUT_STRIDE: int = 8

# --- ENet (Paszke, Chaurasia, Kim, Culurciello, "ENet: A Deep Neural Network Architecture for
# --- Real-Time Semantic Segmentation", arXiv:1606.02147, 2016) and the authors' Torch7 release
# --- e-lab/ENet-training (train/models/encoder.lua at 16f38830b1eb0b81fb625b4ee6eba5acefde2e31,
# --- train/models/decoder.lua at 0daaae355ab0ebb616f498ccdf32690f22adc567).
#: Class weighting w_class = 1 / ln(c + p_class) (paper section 5.1, "c = 1.02"; decoder.lua
#: `1 / torch.log(1.02 + normHist[i])`), bounding weights to [1, 50].
ENET_CLASS_WEIGHT_C: float = 1.02
#: Spatial dropout of the bottlenecks: 0.01 before bottleneck2.0, 0.1 after (paper section 4;
#: encoder.lua `(ct < 5) and 0.01 or 0.1`: the first five bottlenecks are 1.0-1.4).
ENET_DROPOUT_STAGE1: float = 0.01
ENET_DROPOUT_LATER: float = 0.1
#: The bottleneck's internal width is output / 4 (encoder.lua `internal_scale` 4).
ENET_INTERNAL_RATIO: int = 4
#: Parameters of the whole net stated by the paper (Table 3: "0.37 M").
ENET_PAPER_PARAMETERS_M: float = 0.37

# --- LinkNet (Chaurasia & Culurciello, "LinkNet: Exploiting Encoder Representations for
# --- Efficient Semantic Segmentation", VCIP 2017, arXiv:1707.03718) and the authors' PyTorch
# --- release e-lab/pytorch-linknet (models/linknet.py at 1f27384cab08eca2517be9be4e2ffc880777c464).
#: Decoder block: 1x1 conv m -> m/4, 3x3 full-conv stride 2, 1x1 conv m/4 -> n (paper Fig. 3);
#: final block: 3x3 full-conv to 32, 3x3 conv 32, 2x2 full-conv to the classes (Fig. 2).
LINKNET_BLOCK_REDUCTION: int = 4
LINKNET_FINAL_CHANNELS: int = 32
#: Parameters stated by the paper for LinkNet on ResNet-18 (Table 1: "11.5 M").
LINKNET_PAPER_PARAMETERS_M: float = 11.5
