"""wsigraph.train"""
