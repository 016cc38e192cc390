"""Firmware: the int8 model exported as a freestanding C library, built for Cortex-M and measured from the ELF."""
