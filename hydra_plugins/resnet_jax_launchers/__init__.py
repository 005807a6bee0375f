"""resnet_jax's Hydra launchers, where Hydra looks for launchers (the `hydra_plugins` namespace package): each
is the class of the same name in `resnet_jax`, which holds the code."""

from resnet_jax import population_launcher, slurm


class SlurmLauncher(slurm.SlurmLauncher):
    """`launcher=submitit_slurm`: resnet_jax.slurm.SlurmLauncher."""


class PopulationLauncher(population_launcher.PopulationLauncher):
    """`launcher=population`: resnet_jax.population_launcher.PopulationLauncher."""
