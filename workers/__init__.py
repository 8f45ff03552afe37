"""Provisioning workers that follow the event stream (see issue "Provisioning workers")."""
