"""HHA on a rendered floor + wall scene, whose three channels have closed-form values."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from fcnseg.constants import HHA_ANGLE_OFFSET_DEG, HHA_DEFAULT_CAMERA_HEIGHT_CM
from fcnseg.data.hha import (
    NYUD_INTRINSICS,
    CameraIntrinsics,
    backproject,
    depth_to_hha,
    encode_hha,
    estimate_up,
    hha_components,
    main,
)

# NYUDv2 intrinsics at 1/8 of 640 x 480, so the test stays tiny.
SCALE = 1 / 8
INTRINSICS = NYUD_INTRINSICS.scaled(SCALE)
HEIGHT, WIDTH = 60, 80
CAMERA_HEIGHT = 1.2  # metres above the floor
WALL_DISTANCE = 3.0  # metres, along the horizontal viewing direction
PITCH_DEG = 15.0  # camera tilted down


def render_room(pitch_deg: float = PITCH_DEG, roll_deg: float = 0.0):
    """Depth of a floor (Y = 0) and a wall (Z = WALL_DISTANCE) seen by a tilted camera.

    World frame: Y up, the camera at (0, CAMERA_HEIGHT, 0) looking along +Z, pitched down and
    rolled. Returns depth (z in the camera frame), the camera-frame up vector, and per-pixel
    ground truth: which plane, and the world height of the hit point.
    """
    pitch, roll = np.deg2rad(pitch_deg), np.deg2rad(roll_deg)
    forward = np.array([0.0, -np.sin(pitch), np.cos(pitch)])
    down = np.array([0.0, -np.cos(pitch), -np.sin(pitch)])
    right = np.cross(down, forward)
    # Roll about the viewing axis.
    right, down = (
        np.cos(roll) * right + np.sin(roll) * down,
        -np.sin(roll) * right + np.cos(roll) * down,
    )
    rotation = np.stack([right, down, forward], axis=1)  # camera -> world (columns)
    rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    rays_cam = np.stack(
        [
            (cols + 1 - INTRINSICS.cx) / INTRINSICS.fx,
            (rows + 1 - INTRINSICS.cy) / INTRINSICS.fy,
            np.ones_like(rows),
        ],
        axis=-1,
    )
    rays = rays_cam @ rotation.T
    with np.errstate(divide="ignore"):
        t_floor = np.where(rays[..., 1] < 0, -CAMERA_HEIGHT / rays[..., 1], np.inf)
        t_wall = np.where(rays[..., 2] > 0, WALL_DISTANCE / rays[..., 2], np.inf)
    on_floor = t_floor < t_wall
    depth = np.minimum(t_floor, t_wall)
    world_height = CAMERA_HEIGHT + depth * rays[..., 1]
    up_cam = rotation.T @ np.array([0.0, 1.0, 0.0])
    return depth, up_cam, on_floor, world_height


def _interior(mask: np.ndarray, margin: int) -> np.ndarray:
    """Pixels whose (2 margin + 1)^2 window lies inside `mask` and inside the image."""
    inside = ndimage.binary_erosion(mask, iterations=margin, border_value=0)
    return inside


@pytest.mark.parametrize("known_up", [True, False], ids=["known_gravity", "estimated_gravity"])
def test_floor_and_wall_have_closed_form_height_and_angle(known_up):
    depth, up_cam, on_floor, world_height = render_room()
    assert on_floor.any() and (~on_floor).any(), "the scene must show both planes"
    parts = hha_components(depth, INTRINSICS, up=up_cam if known_up else None)
    # The floor is the lowest point, so height is measured from it: 0 on the floor, the hit
    # point's world height on the wall.
    floor = _interior(on_floor, 4)
    wall = _interior(~on_floor, 4)
    # With the true gravity the values are exact; the estimate is biased by the normals fitted
    # across the floor/wall crease (under 1 degree here), which moves heights by < 5 cm at 3 m.
    height_tol, angle_tol = (1e-6, 1e-3) if known_up else (0.05, 1.0)
    np.testing.assert_allclose(parts.height[floor], 0.0, atol=height_tol)
    np.testing.assert_allclose(parts.height[wall], world_height[wall], atol=height_tol)
    np.testing.assert_allclose(parts.angle[floor], 0.0, atol=angle_tol)
    np.testing.assert_allclose(parts.angle[wall], 90.0, atol=angle_tol)
    np.testing.assert_allclose(parts.disparity, 1.0 / depth, rtol=1e-12)
    np.testing.assert_allclose(parts.up, up_cam, atol=1e-6 if known_up else np.deg2rad(angle_tol))


def test_gravity_estimate_recovers_pitch_and_roll():
    depth, up_cam, _, _ = render_room(pitch_deg=25.0, roll_deg=10.0)
    parts = hha_components(depth, INTRINSICS)
    error_deg = np.degrees(np.arccos(np.clip(parts.up @ up_cam, -1, 1)))
    assert error_deg < 1.0
    # Starting from the level guess the estimate has to move by the full tilt.
    level_error = np.degrees(np.arccos(-up_cam[1]))
    assert level_error > 20


def test_estimate_up_prefers_floor_over_walls():
    """Normals: many walls (perpendicular to up) and a floor; the answer is the floor normal."""
    tilt = np.deg2rad(20.0)
    up = np.array([0.0, -np.cos(tilt), -np.sin(tilt)])
    wall_a = np.cross(up, [1.0, 0.0, 0.0])
    wall_a /= np.linalg.norm(wall_a)
    wall_b = np.cross(up, wall_a)
    normals = np.concatenate(
        [np.tile(up, (50, 1)), np.tile(wall_a, (200, 1)), np.tile(wall_b, (200, 1))]
    )
    estimate = estimate_up(normals.reshape(-1, 1, 3))
    np.testing.assert_allclose(estimate, up, atol=1e-9)


def test_uint8_encoding_matches_savehha_scaling():
    depth, up_cam, on_floor, world_height = render_room()
    hha = depth_to_hha(depth, INTRINSICS, up=up_cam)
    assert hha.dtype == np.uint8 and hha.shape == (HEIGHT, WIDTH, 3)
    wall = _interior(~on_floor, 4)
    floor = _interior(on_floor, 4)
    depth_cm = depth * 100
    expected_disparity = np.clip(np.round(31000 / np.maximum(depth_cm, 100)), 0, 255)
    np.testing.assert_array_equal(hha[..., 0], expected_disparity)
    np.testing.assert_array_equal(hha[..., 1][wall], np.round(world_height[wall] * 100))
    assert (hha[..., 1][floor] == 0).all()
    assert (hha[..., 2][floor] == round(HHA_ANGLE_OFFSET_DEG)).all()
    assert (hha[..., 2][wall] == round(90 + HHA_ANGLE_OFFSET_DEG)).all()


def test_missing_depth_encodes_as_zero_and_floorless_view_assumes_camera_height():
    # A fronto-parallel wall 2 m away only: the lowest point is < 90 cm below the camera, so the
    # camera is assumed 130 cm above the floor and height = 1.3 m + camera-frame elevation.
    depth = np.full((HEIGHT, WIDTH), 2.0)
    depth[10:14, 20:24] = 0.0
    parts = hha_components(depth, INTRINSICS, up=(0.0, -1.0, 0.0))
    points = backproject(depth, INTRINSICS)
    expected = HHA_DEFAULT_CAMERA_HEIGHT_CM / 100 - points[..., 1]
    valid = depth > 0
    np.testing.assert_allclose(parts.height[valid], expected[valid], atol=1e-9)
    hha = encode_hha(parts)
    assert (hha[10:14, 20:24] == 0).all()
    assert (hha[valid][:, 0] > 0).all()


def test_scaled_intrinsics_keep_pixel_centres():
    full = CameraIntrinsics(fx=100.0, fy=100.0, cx=320.5, cy=240.5)  # the image centre, 1-based
    half = full.scaled(0.5)
    assert half.cx == pytest.approx(160.5) and half.cy == pytest.approx(120.5)
    assert half.fx == pytest.approx(50.0)


def test_bad_inputs_raise_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="2-D"):
        backproject(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="up must be"):
        hha_components(np.ones((8, 8)), INTRINSICS, up=(0.0, 0.0, 0.0))
    with pytest.raises(FileNotFoundError, match="no depth PNGs"):
        main([str(tmp_path), str(tmp_path / "out")])


def test_folder_tool_writes_hha_pngs(tmp_path):
    depth, _, _, _ = render_room()
    depth_dir = tmp_path / "depth"
    depth_dir.mkdir()
    Image.fromarray(np.round(depth * 1000).astype(np.uint16)).save(depth_dir / "img_5001.png")
    assert main([str(depth_dir), str(tmp_path / "hha")]) == 0
    written = np.asarray(Image.open(tmp_path / "hha" / "img_5001.png"))
    assert written.shape == (HEIGHT, WIDTH, 3) and written.dtype == np.uint8
    # Default intrinsics are the full-resolution NYUD ones, so only the disparity is checked.
    expected = np.clip(np.round(31000 / np.maximum(np.round(depth * 1000) / 10, 100)), 0, 255)
    np.testing.assert_array_equal(written[..., 0], expected)
