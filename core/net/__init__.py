"""The MSTT network only: 4 LR frames and their middle flows in, 7 HR frames out.

``model.MSTT`` assembles the paper's blocks: feature extraction (``blocks``), multi-scale
deformable alignment (``msd_align`` over the DCNv2 of ``dcn``), flow warping of the missing
frames' features (``warp``), the multi-scale spatial-temporal transformer (``transformer``) and
pixel-shuffle reconstruction. ``weights`` reads and writes checkpoints (ours and upstream's);
``spec`` holds the network's facts (scale, frame counts, size multiple, patch sizes) for every
other package, without torch. This package imports torch and safetensors only: no OpenCV,
rasterio, GDAL or QGIS. Optical flow is an input; estimating it is ``core.run.flow``'s job.
"""
