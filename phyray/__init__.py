"""phyray: does a video generation model learn physical laws if we scale it?"""
__version__ = "0.1.0"
