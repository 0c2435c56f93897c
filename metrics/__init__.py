"""Image quality metrics and model complexity: importable functions plus ``python -m metrics.<name>`` scripts.

``psnr_ssim`` (fsr / basicsr conventions), ``lpips`` (AlexNet / VGG, offline backbone weights),
``vif`` (pixel-domain VIF on luminance), ``complexity`` (parameters, FLOPs / MACs, latency);
``table`` holds every metric's facts (the one place a metric is added); ``io`` scores paired folders
into per-image rows, CSV and means (listing and decoding: ``utils.image_io``); ``tensor`` turns network
output tensors into uint8 images (the only torch import among psnr_ssim / vif / io). Import the submodule you need (nothing is imported here, so
``python -m metrics.psnr_ssim`` runs its module once).
"""
