"""Mailchimp Marketing API client for segment exports (no Azure imports here: it runs anywhere)."""
from .client import MailchimpClient
from .credentials import Credentials, fetch_oauth_metadata
from .errors import (MailchimpAuthError, MailchimpError, MailchimpNotFound, MailchimpRequestError,
                     MailchimpUnavailable)
from .models import Audience, MergeField
from .retry import RetryPolicy

__all__ = ["Audience", "Credentials", "MailchimpAuthError", "MailchimpClient", "MailchimpError", "MailchimpNotFound",
           "MailchimpRequestError", "MailchimpUnavailable", "MergeField", "RetryPolicy", "fetch_oauth_metadata"]
