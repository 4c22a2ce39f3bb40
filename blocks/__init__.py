"""Prefect blocks: the configuration and credentials of every system the runbook touches.

``prefect block register -m blocks`` registers them all. Email uses prefect-email's
EmailServerCredentials (``prefect block register -m prefect_email``).
"""

from blocks.app import AppEndpoint
from blocks.gateway import GatewaySecrets
from blocks.pagerduty import PagerDuty
from blocks.postgres import PostgresTarget
from blocks.slack import Slack
from blocks.statuspage import Statuspage
from blocks.supabase import SupabaseProject
from blocks.teams import Teams
from blocks.tickets import GitHubRepository, JiraProject, ticket_client
from blocks.vercel import VercelProject

__all__ = [
    "AppEndpoint",
    "GatewaySecrets",
    "GitHubRepository",
    "JiraProject",
    "PagerDuty",
    "PostgresTarget",
    "Slack",
    "Statuspage",
    "SupabaseProject",
    "Teams",
    "VercelProject",
    "ticket_client",
]
