# Re-export for `DiffusionPipeline.from_pretrained(..., trust_remote_code=True)`: the class is the daclip
# package's, so that package must be importable.
try:
    import daclip as _daclip
except ImportError as error:
    raise ImportError("this pipeline folder needs the daclip package: install it from a clone of its repository: `pip install -e <clone>` (see the README there).") from error
DACLIPUNet2DModel = _daclip.DACLIPUNet2DModel
