"""Image quality metrics and model complexity: importable functions plus ``python -m metrics.<name>`` scripts.

``psnr_ssim`` (fsr / basicsr conventions), ``lpips`` (AlexNet / VGG, offline backbone weights),
``vif`` (pixel-domain VIF on luminance), ``complexity`` (parameters, FLOPs / MACs, latency);
``io`` reads and pairs image folders. Submodules other than ``psnr_ssim`` are imported on demand.
"""

from metrics.psnr_ssim import CONVENTIONS, calculate_psnr, calculate_ssim, describe, tensor_to_uint8

__all__ = ["CONVENTIONS", "calculate_psnr", "calculate_ssim", "describe", "tensor_to_uint8"]
