"""GPU backends of the node agent, one module each: `base` (the GpuBackend interface and its types),
`nvml` (NvmlBackend: the only importer of pynvml) and `simulated` (SimulatedBackend, no hardware).

Import from the submodules. Units at this boundary are NVML's: milliwatts for power and limits,
millijoules for energy, MHz for clocks.
"""
