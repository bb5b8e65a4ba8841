"""The procedural eye renderer: seeded, gaze-dependent, and a camera profile that differs."""

import numpy as np

from refiner.tasks.gaze.angles import EYE_SIZE
from refiner.tasks.gaze.renderer import GAZE_RANGE, PROFILES, render_eye, render_eyes


def pupil_centre(image: np.ndarray) -> tuple[float, float]:
    """(row, col) centroid of the darkest pixels: the pupil."""
    rows, cols = np.nonzero(image <= np.quantile(image, 0.01))
    return rows.mean(), cols.mean()


def same_eye(pitch: float, yaw: float) -> np.ndarray:
    return render_eye(pitch, yaw, np.random.default_rng(7), PROFILES["synthetic"])  # same face, other gaze


def test_gaze_moves_the_pupil_the_way_the_angles_say():
    left, right = pupil_centre(same_eye(0.0, 0.4)), pupil_centre(same_eye(0.0, -0.4))
    up, down = pupil_centre(same_eye(0.3, 0.0)), pupil_centre(same_eye(-0.3, 0.0))
    assert left[1] < right[1] - 4  # yaw > 0 looks towards the image's left
    assert up[0] < down[0] - 2     # pitch > 0 looks up (smaller row)


def test_render_is_seeded_and_any_slice_reproducible():
    ids, images, gaze = render_eyes(12, seed=3, progress=False)
    _, head, head_gaze = render_eyes(5, seed=3, progress=False)
    _, other, _ = render_eyes(5, seed=4, progress=False)
    assert images.shape == (12, *EYE_SIZE) and images.dtype == np.float32
    # dark pupils and bright sclera: each eye spans most of [0, 1], saturating next to none of it
    assert all(image.min() < 0.2 and image.max() > 0.8 for image in images)
    assert np.mean((images <= 0) | (images >= 1)) < 0.01
    assert np.array_equal(images[:5], head) and np.array_equal(gaze[:5], head_gaze)
    assert not np.array_equal(head, other)
    assert np.all(np.abs(gaze) <= GAZE_RANGE) and len(set(ids)) == 12


def test_camera_profile_is_another_domain_with_the_same_gaze_distribution():
    from refiner.evaluation.label_free import realism
    _, synthetic, synthetic_gaze = render_eyes(300, seed=0, profile="synthetic", progress=False)
    _, camera, camera_gaze = render_eyes(300, seed=0, profile="camera", progress=False)
    assert realism(synthetic, camera, seed=0) > 0.8  # a linear probe tells them apart
    assert abs(np.std(synthetic_gaze) - np.std(camera_gaze)) < 0.05
    high_frequency = [np.abs(np.diff(images, axis=2)).mean() for images in (synthetic, camera)]
    assert high_frequency[1] > high_frequency[0]  # sensor noise and JPEG
