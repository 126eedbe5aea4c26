"""ComfyUI nodes (filled in by the node-pack work); importable without ComfyUI."""
NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
