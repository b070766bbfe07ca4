"""Image file extensions ddad reads, in a module that imports nothing heavy (the CLI checks inputs with it before
torch is loaded)."""

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
