"""Session memory, worker side: the window a turn remembers and the rolling summary's scheduling
(window.py), and the summary jobs that call the model (summary.py)."""
