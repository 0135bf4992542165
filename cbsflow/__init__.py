"""cbsflow: Complexity-Balanced Splitting of flow-matching models.

Convention (stated once, used everywhere): t = 0 is noise, t = 1 is data;
x_t = alpha(t) * x1 + sigma(t) * eps, and networks predict the velocity d/dt x_t.
"""

__version__ = "0.1.0"
