"""Subscribers: validating municipalities and addresses, consent, and signed links.

Owns the subscription rules: what a valid subscriber is (`forms`), double opt-in with
signed, expiring, one-time confirmation links and rate limits on confirmation mails
(`optin`), unsubscribe and preference tokens (`tokens`), and the operator's CSV import
(`csv_import`). Imports `config`, `store`, `consent`, `mailer`, `templating`, `text` and
`errors`.
"""

from service.subscribers.csv_import import (
    CSV_COLUMNS as CSV_COLUMNS,
)
from service.subscribers.csv_import import (
    CSV_ENCODINGS as CSV_ENCODINGS,
)
from service.subscribers.csv_import import (
    ImportReport as ImportReport,
)
from service.subscribers.csv_import import (
    decode_csv as decode_csv,
)
from service.subscribers.csv_import import (
    import_csv as import_csv,
)
from service.subscribers.csv_import import (
    import_rows as import_rows,
)
from service.subscribers.forms import (
    BUNDESLAENDER as BUNDESLAENDER,
)
from service.subscribers.forms import (
    PreferencesIn as PreferencesIn,
)
from service.subscribers.forms import (
    SubscriberIn as SubscriberIn,
)
from service.subscribers.forms import (
    german_error as german_error,
)
from service.subscribers.optin import (
    RateLimitedError as RateLimitedError,
)
from service.subscribers.optin import (
    confirm as confirm,
)
from service.subscribers.optin import (
    confirmation_mail as confirmation_mail,
)
from service.subscribers.optin import (
    pending_confirmation as pending_confirmation,
)
from service.subscribers.optin import (
    purge_unconfirmed as purge_unconfirmed,
)
from service.subscribers.optin import (
    request_subscription as request_subscription,
)
from service.subscribers.optin import (
    unsubscribe as unsubscribe,
)
from service.subscribers.optin import (
    update_preferences as update_preferences,
)
from service.subscribers.tokens import InvalidTokenError as InvalidTokenError
from service.subscribers.tokens import Tokens as Tokens
