"""Georeferenced IO with rasterio: a stack of frames checked to line up (``stack``), their
acquisition times (``times``), values scaled to the network's [0, 1] and back (``values``),
windowed reads with nodata filled (``read``), output GeoTIFFs that keep the inputs'
georeferencing at a quarter of the pixel size (``write``), and the run's output files under
temporary names until they are committed together (``outputs``), and the one synthetic-stack
writer that tests, tools and the benchmark share (``synthetic``)."""
