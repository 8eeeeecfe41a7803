-- One database (and owner) per service: no service reads another's tables.
CREATE USER accounts WITH PASSWORD 'accounts';
CREATE DATABASE accounts OWNER accounts;
CREATE USER payments WITH PASSWORD 'payments';
CREATE DATABASE payments OWNER payments;
