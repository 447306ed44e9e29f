"""
The built-in demo application that C{twistd -n beryl} serves without
C{--app}: a chat page and the C{room:*} and C{feed:*} channels.
"""

from beryl.demo.channels import demo_app

__all__ = ["demo_app"]
