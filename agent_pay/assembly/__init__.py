"""Putting agent-pay together: the composition root (`root.assemble`) and the channel
scheme's parts (`channels`). Import from the submodules: this package loads nothing itself."""
