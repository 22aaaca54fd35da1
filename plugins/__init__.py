"""Built-in model plugins (pokegen.plugins): one folder per model, registered through the
`pokegen.models` entry-point group in pyproject.toml like any third-party plugin."""
