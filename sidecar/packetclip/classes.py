"""The label vocabulary shared by the lab, the datasets, the models and every verdict record.

Changing a name here changes the verdict-record contract (docs/design.md) and needs a version bump.
"""

COARSE_CLASSES: tuple[str, ...] = ("benign", "dos", "recon", "bruteforce")

FINE_TO_COARSE: dict[str, str] = {
    "benign": "benign",
    "icmp_flood": "dos",
    "syn_flood": "dos",
    "udp_flood": "dos",
    "dns_flood": "dos",
    "slowloris": "dos",
    "port_scan": "recon",
    "os_scan": "recon",
    "vulnerability_scan": "recon",
    "ping_sweep": "recon",
    "dictionary_attack": "bruteforce",
}

FINE_CLASSES: tuple[str, ...] = tuple(FINE_TO_COARSE)


def coarse_of(fine: str) -> str:
    """The coarse class of a fine class; a KeyError names the unknown class."""
    try:
        return FINE_TO_COARSE[fine]
    except KeyError:
        raise KeyError(f"unknown fine class {fine!r}; known: {', '.join(FINE_CLASSES)}") from None
