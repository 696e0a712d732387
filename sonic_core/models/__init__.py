"""The networks of Sonic, one model a file, as config-driven ``nn.Module``s whose state-dict keys equal the
published checkpoints' keys (loading is a plain strict ``load_state_dict``)."""
