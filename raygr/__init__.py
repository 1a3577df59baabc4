"""raygr: generative recommendation with Semantic IDs learned jointly with the recommender, on Ray."""

__version__ = "0.1.0"
