"""Image quality metrics and model complexity: importable functions plus ``python -m metrics.<name>`` scripts.

``psnr_ssim`` (fsr / basicsr conventions), ``lpips`` (AlexNet / VGG, offline backbone weights),
``vif`` (pixel-domain VIF on luminance), ``complexity`` (parameters, FLOPs / MACs, latency);
``io`` reads and pairs image folders and holds the averaging rule; ``tensor`` turns network
output tensors into uint8 images (the only torch import among psnr_ssim / vif / io). Import the submodule you need (nothing is imported here, so
``python -m metrics.psnr_ssim`` runs its module once).
"""
