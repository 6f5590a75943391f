"""The datagram transport (like OpenSIPS mi_datagram): UDP or an AF_UNIX datagram socket,
one bare JSON request per datagram, one reply datagram to the sender."""
