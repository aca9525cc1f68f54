"""Figures: Figure 3, the clock's figures, the algorithm family, theory diagnostics."""
