"""Tenantry's domain: aggregates, commands, rules and the command-handling service."""
