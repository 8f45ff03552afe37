"""Read models built from the event log (see issue "Read side")."""
