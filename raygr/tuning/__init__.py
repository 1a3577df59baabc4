"""Hyper-parameter search without Ray: the search-space description, trial planning and reporting.

``raygr.distributed.tune`` maps these onto Ray Tune; everything here runs (and is tested) without Ray.
"""
