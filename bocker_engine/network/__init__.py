"""Container networking: bridges and veths (netlink via pyroute2), IPAM, NAT and port rules
(iptables), the userland proxy for published ports and the embedded DNS of user networks."""
