"""What several devices share: the configuration and behaviour of a family of devices
(distance rangers, power meters, FIFO accelerometers), written once."""
