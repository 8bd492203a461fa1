"""Compare Images inside the real ComfyUI (in-process)."""
import pytest
import torch

from tests.quant.reports.test_image_metrics import skimage_reference, smooth_images

TOLERANCE = 1e-4


def compare(pack, image_a, image_b, *options):
    return pack.NODE_CLASS_MAPPINGS["SD35FP8CompareImages"]().compare(image_a, image_b, *options)


def noisy_pair(batch, height, width):
    generator = torch.Generator().manual_seed(int(torch.randint(0, 10**6, ())))
    image_a = smooth_images(batch, height, width, generator)
    return image_a, (image_a + 0.03 * torch.randn(image_a.shape, generator=generator)).clamp(0, 1)


def test_picture_and_metrics_of_a_batch(pack):
    image_a, image_b = noisy_pair(2, 64, 96)
    picture, metrics = compare(pack, image_a, image_b, "full precision", "FP8", 0.0)
    assert picture.dtype == torch.float32 and picture.shape[0] == 2 and picture.shape[3] == 3
    assert picture.shape[2] > 3 * 256 and 0 <= picture.min() and picture.max() <= 1
    psnr, ssim = skimage_reference(image_a, image_b)
    lines = metrics.splitlines()
    assert lines[0].startswith("FP8 against full precision")
    for i in range(2):
        printed = lines[1 + i].split()  # image N: PSNR <p> dB, SSIM <s>
        assert float(printed[3]) == pytest.approx(psnr[i], abs=0.005 + TOLERANCE)
        assert float(printed[6]) == pytest.approx(ssim[i], abs=0.00005 + TOLERANCE)
    assert lines[3].startswith(f"mean of 2: PSNR {sum(psnr) / 2:.2f} dB, SSIM {sum(ssim) / 2:.4f}")


def test_images_of_different_sizes_are_refused(pack):
    with pytest.raises(pack.quant.errors.SD35FP8Error, match="same size and batch: image_a is 1 image"):
        compare(pack, torch.rand(1, 64, 64, 3), torch.rand(1, 64, 80, 3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_images_on_the_gpu(pack):
    image_a, image_b = noisy_pair(1, 32, 32)
    on_cpu = compare(pack, image_a, image_b)
    on_gpu = compare(pack, image_a.cuda(), image_b.cuda())
    assert on_gpu[1] == on_cpu[1] and torch.equal(on_gpu[0], on_cpu[0])
