"""Physical quantities the devices measure: unit, resolution and meaning, defined once.

A device's spec lists the ones it delivers with its own valid range
(``PM25.within(0, 1000)``); the payload's catalogue of record names
(:mod:`agent.wire.quantities`) is built from the specs, so a unit is never written twice.
Units are SenML's (RFC 8428 section 12.1) where one is registered, "" where none is.
"""

from __future__ import annotations

from .spec import Quantity

PM1 = Quantity('ug/m3', 1, 'PM1.0 mass concentration (atmospheric)', '3428/5')
PM25 = Quantity('ug/m3', 1, 'PM2.5 mass concentration (atmospheric)', '3428/3')
PM10 = Quantity('ug/m3', 1, 'PM10 mass concentration (atmospheric)', '3428/1')
PM1_CF1 = Quantity('ug/m3', 1, "PM1.0, Plantower CF=1 'standard particle'")
PM25_CF1 = Quantity('ug/m3', 1, "PM2.5, Plantower CF=1 'standard particle'")
PM10_CF1 = Quantity('ug/m3', 1, "PM10, Plantower CF=1 'standard particle'")
N0_3 = Quantity('', 1, 'particles > 0.3 um per 0.1 L')
N0_5 = Quantity('', 1, 'particles > 0.5 um per 0.1 L')
N1_0 = Quantity('', 1, 'particles > 1.0 um per 0.1 L')
N2_5 = Quantity('', 1, 'particles > 2.5 um per 0.1 L')
N5_0 = Quantity('', 1, 'particles > 5.0 um per 0.1 L')
N10 = Quantity('', 1, 'particles > 10 um per 0.1 L')
PM4 = Quantity('ug/m3', 1, 'PM4.0 mass concentration (SPS30)')
NC0_5 = Quantity('/cm3', 0.01, 'particles 0.3-0.5 um per cm3 (SPS30)')
NC1_0 = Quantity('/cm3', 0.01, 'particles 0.3-1.0 um per cm3 (SPS30)')
NC2_5 = Quantity('/cm3', 0.01, 'particles 0.3-2.5 um per cm3 (SPS30)')
NC4_0 = Quantity('/cm3', 0.01, 'particles 0.3-4.0 um per cm3 (SPS30)')
NC10 = Quantity('/cm3', 0.01, 'particles 0.3-10 um per cm3 (SPS30)')
TPS = Quantity('um', 0.001, 'typical particle size (SPS30)')
TEMP = Quantity('Cel', 0.01, 'air temperature', '3303/5700')
RH = Quantity('%RH', 0.1, 'relative humidity', '3304/5700')
PRESSURE = Quantity(
    'hPa', 0.01, 'barometric pressure (hPa = 100 Pa; not a SenML unit)', '3323/5700')
W = Quantity('W', 0.1, 'active power', '3328/5700')
V = Quantity('V', 0.1, 'mains voltage', '3316/5700')
A = Quantity('A', 0.001, 'current', '3317/5700')
KWH = Quantity('kWh', 0.001, "energy since the meter's counter started", '3331/5805')
HZ = Quantity('Hz', 0.1, 'mains frequency')
PF = Quantity('', 0.01, 'power factor, 0..1')
D = Quantity('m', 0.001, 'distance', '3330/5700')
AX = Quantity(
    'g', 0.001, "acceleration along x in g (9.80665 m/s2; not SenML's g, the gram)", '3313/5702')
AY = Quantity(
    'g', 0.001, "acceleration along y in g (9.80665 m/s2; not SenML's g, the gram)", '3313/5703')
AZ = Quantity(
    'g', 0.001, "acceleration along z in g (9.80665 m/s2; not SenML's g, the gram)", '3313/5704')
AMAG = Quantity('g', 0.001, 'peak acceleration magnitude since the previous reading, in g')
ECO2 = Quantity('ppm', 1, 'CO2 equivalent, estimated from H2 (SGP30)')
TVOC = Quantity('ppb', 1, 'total volatile organic compounds (SGP30; ppb is not a SenML unit)')
H2_RAW = Quantity('', 1, 'SGP30 raw H2 signal in ticks (lower = more gas)')
ETHANOL_RAW = Quantity('', 1, 'SGP30 raw ethanol signal in ticks (lower = more gas)')
# 0.1 lx: the finest BH1750 step is 0.11 lx (MTreg 254, H-resolution mode 2), and night-time
# street lighting (1-20 lx) needs sub-lux steps; daylight values stay compact in the payload
# through its relative tolerance.
LUX = Quantity('lx', 0.1, 'illuminance', '3301/5700')
UVI = Quantity('', 0.01, 'UV index (erythemally weighted UV irradiance / 25 mW/m2)')
TARGETS = Quantity('', 1, 'people a radar tracks now (HLK-LD2450: at most 3)')
# A PIR says presence, not how many: 1 when it saw motion since the previous reading; over a
# report the mean is the share of readings with motion, a ratio (SenML '/').
MOTION = Quantity('/', 0.01, 'motion seen since the previous reading, 1 or 0 (PIR)', '3302/5500')
# People counting (agent/features/counting.py, docs/counting.md): records <sensor>:in,
# :out, :ppl, :pres. SenML (RFC 8428 section 12.1) registers 'count' for a counter value (a
# dimensionless number of events): crossings in a report interval are exactly that. A mean
# number of people is no counter value and neither RFC 8428 nor RFC 8798 registers a unit
# for people, so it has none (as `targets`); a share of time is SenML's ratio '/'.
IN = Quantity('count', 1, 'people who crossed the counting line towards +x (in) in the report '
              'interval')
OUT = Quantity('count', 1, 'people who crossed the counting line towards -x (out) in the '
               'report interval')
PPL = Quantity('', 0.01, 'people in the counting zone, mean over the report interval (radar)')
PRES = Quantity('/', 0.01, 'share of the report interval with someone there, 0..1 (PIR, '
                'doorway time-of-flight)')
