"""The only package that imports ray: Data pipelines, Train, Tune and Serve wrappers."""
