"""mq-check: a monitoring plugin (Nagios plugin conventions) reading queue sizes over MI."""
