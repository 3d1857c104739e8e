"""The fix printed with every WARN and FAIL (docs/doctor.md quotes these)."""

from __future__ import annotations

# -- fix hints (docs/doctor.md quotes these) ------------------------------------------------
HINT_CONFIG = "fix the key named above (README.md has the configuration reference), then " \
              "run `citynode config check FILE`"
HINT_CONFIG_FILE = "name the configuration file: citynode doctor --config FILE (default " \
                   "$CITYNODE_CONFIG, else /etc/citynode/citynode.toml); citynode provision " \
                   "writes one"
HINT_I2C_OFF = "enable I2C: dtparam=i2c_arm=on in /boot/firmware/config.txt (or raspi-config " \
               "> Interface Options > I2C), then reboot"
HINT_I2C_PERM = "add the service user to the i2c group: sudo usermod -aG i2c citynode"
HINT_I2C_MISSING = "check the wiring (SDA GPIO2, SCL GPIO3, 3.3 V, GND), the address " \
                   "jumper/pin and that I2C is on (dtparam=i2c_arm=on)"
HINT_I2C_WRONG = "a different chip is fitted at this address: fit the configured part, or " \
                 "change sensor.type to what is there"
HINT_I2C_UNKNOWN = "the device answers but not as this chip does: check the part number " \
                   "and that no other chip shares the address"
HINT_I2C_KERNEL = "a kernel driver owns this address: remove the dtoverlay that binds it " \
                  "(e.g. dtoverlay=i2c-sensor,...) from config.txt and reboot"
HINT_I2C_EXTRA = "not in the configuration: add a [[sensor]] for it, or ignore it if it " \
                 "belongs to a HAT (EEPROM, RTC)"
HINT_PORT_MISSING = "check the udev name (ls -l /dev/serial* /dev/ttyUSB*), enable the UART " \
                    "(enable_uart=1 in config.txt) and turn the serial console off " \
                    "(raspi-config > Interface Options > Serial Port)"
HINT_PORT_PERM = "add the service user to the dialout group: sudo usermod -aG dialout citynode " \
                 "(log in again to take effect)"
HINT_PORT_BUSY = "another program holds the port: stop the daemon (systemctl stop citynode) " \
                 "or the serial console getty, then run doctor again"
HINT_PORT_DIR = "set sensor.port to the serial device itself, e.g. /dev/serial0, " \
                "/dev/ttyUSB0 or a /dev/serial/by-id/... name (ls -l /dev/serial* /dev/ttyUSB*)"
HINT_NOT_SERIAL = "sensor.port must name a serial device (a UART or USB adapter): check it " \
                  "(ls -l /dev/serial* /dev/ttyUSB* /dev/ttyAMA*)"
HINT_DAEMON_RUNNING = "stop citynode first (sudo systemctl stop citynode), run doctor again " \
                      "for the full check, then start it (sudo systemctl start citynode)"
HINT_DAEMON_SENSOR = "the daemon cannot read this sensor: stop citynode first (sudo " \
                     "systemctl stop citynode) and run doctor again to tell wiring, power " \
                     "and settings apart"
HINT_PORT_GONE = "the port vanished while listening: loose USB adapter or cable, or power " \
                 "brown-out"
HINT_SILENT = "nothing arrives: check the wiring (sensor TX to Pi RX GPIO15, sensor RX to " \
              "Pi TX GPIO14, crossed) and the sensor's power"
HINT_GARBAGE = "bytes arrive but never a valid frame: wrong baud rate or wrong device type " \
               "(is it really this sensor?); capture and inspect with `citynode frames`"
HINT_CHECKSUM = "some frames are corrupt: loose connector, long or unshielded cable, missing " \
                "common ground, or a weak power supply"
HINT_NO_DATA = "the sensor answers commands but sent no measurement yet: it may still be " \
               "spinning up; run again with a longer --listen-s"
HINT_GPIO_NONE = "no GPIO on this machine: on a Pi install python3-lgpio (or pip install " \
                 "lgpio); elsewhere use pins = \"emulator\" or GPIOZERO_PIN_FACTORY=mock"
HINT_GPIO_BUSY = "the pin is held by another program (a running citynode: systemctl stop " \
                 "citynode), a dtoverlay or a kernel driver; or choose a free GPIO"
HINT_GPIO_CLASH = "give each use its own GPIO in the configuration"
HINT_LOCAL = "set mqtt.host (and port) to send data to the platform"
HINT_DNS = "check mqtt.host for typos and the node's DNS (/etc/resolv.conf)"
HINT_REFUSED = "nothing listens there: check mqtt.port, that the broker runs, and firewalls"
HINT_TIMEOUT = "no answer: check the network route, firewalls and mqtt.host"
HINT_NO_ROUTE = "no route to the broker: check the node's network (ip route; is the cable " \
                "or the modem up?), mqtt.host, and firewalls"
HINT_NOT_TLS = "the port may not speak TLS: MQTT over TLS is usually port 8883 (plain MQTT " \
               "1883): check mqtt.port, or set mqtt.tls = false for a plain port; a broker " \
               "that wants a client certificate also hangs up (mqtt.cert_file, mqtt.key_file)"
HINT_MAYBE_TLS = "is this an MQTT port? a TLS-only port (usually 8883) hangs up on plain " \
                 "connections: then set mqtt.tls = true"
HINT_TLS_HANGUP = "the broker hung up after the TLS handshake: it may want a client " \
                  "certificate (mqtt.cert_file, mqtt.key_file) or refuse this one; its log " \
                  "says which"
HINT_TLS_VERIFY = "the broker's certificate is not trusted: check mqtt.ca_file (the CA that " \
                  "signed it), mqtt.server_name (a name the certificate lists) and the clock"
HINT_TLS_FAIL = "the TLS handshake failed: is this a TLS port (usually 8883)? a client " \
                "certificate may be required (mqtt.cert_file, mqtt.key_file)"
HINT_CERT_EXPIRY = "renew the broker's certificate before it expires"
HINT_AUTH = "the broker refused this node: check mqtt.credentials_file, the client " \
            "certificate and the broker's ACL for this client"
HINT_NO_CONNACK = "the broker accepted TCP but did not answer CONNECT: is this an MQTT port?"
HINT_NTP = "check the network and the time service (timedatectl timesync-status; " \
           "systemctl status systemd-timesyncd)"
HINT_YEAR = "the clock is wrong (the Pi has no battery clock): TLS certificates and " \
            "timestamps fail until NTP sets it; connect the network and wait for NTP"
HINT_DISK_FULL = "free space on this filesystem or lower spool.max_bytes: a full disk loses " \
                 "the backlog during a broker outage"
HINT_JOURNAL = "under systemd, stderr still reaches the journal; elsewhere redirect it, or " \
               "set log.target = \"stderr\" to say so"
