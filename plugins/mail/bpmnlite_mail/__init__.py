"""Mail service tasks for bpmnlite, written as any third-party plugin would be.

Installed, it is found through the ``bpmnlite`` entry point group, which
registers :data:`plugin` (an SMTP server on 127.0.0.1:25). For other settings,
change that instance before creating the engine, or register your own
``MailPlugin(...)`` with ``Engine(plugins=[...], load_entry_points=False)``.
A model selects it with ``bpmnlite:type="mail"``.
"""

from __future__ import annotations

from bpmnlite_mail.message import MailConfigError, message_id
from bpmnlite_mail.plugin import MailDeliveryError, MailPlugin

__all__ = ["MailConfigError", "MailDeliveryError", "MailPlugin", "message_id", "plugin"]

plugin = MailPlugin(host="127.0.0.1", port=25)
"""The instance the entry point registers."""
