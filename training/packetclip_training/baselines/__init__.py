"""Flow-feature baselines: the gradient-boosted models NSM teams deploy on Zeek conn.log facts.

They are trained and scored on exactly the dataset's splits so that PacketCLIP results have a fair reference.
"""
