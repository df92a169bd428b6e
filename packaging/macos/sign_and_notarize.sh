#!/usr/bin/env bash
# Sign sd3desk.app with a Developer ID certificate, notarize the .dmg with Apple, and staple
# the ticket, so Gatekeeper opens the app without warnings. Everything secret comes from the
# environment (the CI's secrets), never from the repository:
#   MACOS_CERTIFICATE_P12       base64 of the Developer ID Application certificate (.p12)
#   MACOS_CERTIFICATE_PASSWORD  its password
#   MACOS_SIGN_IDENTITY         e.g. "Developer ID Application: Name (TEAMID)"
#   MACOS_NOTARY_APPLE_ID, MACOS_NOTARY_TEAM_ID, MACOS_NOTARY_PASSWORD (an app-specific password)
# Usage: sign_and_notarize.sh path/to/sd3desk.app path/to/sd3desk.dmg
set -euo pipefail
app="$1"
dmg="$2"
here="$(cd "$(dirname "$0")" && pwd)"

# 1. a throwaway keychain holding the certificate
keychain="$RUNNER_TEMP/sd3desk-signing.keychain-db"
security create-keychain -p "" "$keychain"
security set-keychain-settings -lut 3600 "$keychain"
security unlock-keychain -p "" "$keychain"
echo "$MACOS_CERTIFICATE_P12" | base64 --decode > "$RUNNER_TEMP/cert.p12"
security import "$RUNNER_TEMP/cert.p12" -k "$keychain" -P "$MACOS_CERTIFICATE_PASSWORD" \
  -T /usr/bin/codesign
security set-key-partition-list -S apple-tool:,apple: -s -k "" "$keychain"
security list-keychains -d user -s "$keychain" $(security list-keychains -d user | tr -d '"')

# 2. sign every binary inside out, then the app, with the hardened runtime (notarization needs
#    it) and the entitlements PyTorch needs under it
find "$app/Contents" -type f \( -name "*.dylib" -o -name "*.so" -o -perm -u+x \) -print0 |
  xargs -0 codesign --force --timestamp --options runtime \
    --entitlements "$here/entitlements.plist" --sign "$MACOS_SIGN_IDENTITY"
codesign --force --timestamp --options runtime --entitlements "$here/entitlements.plist" \
  --sign "$MACOS_SIGN_IDENTITY" "$app"
codesign --verify --deep --strict --verbose=2 "$app"

# 3. rebuild the .dmg from the signed app, notarize it, staple the ticket
rm -f "$dmg"
hdiutil create -volname sd3desk -srcfolder "$app" -ov -format UDZO "$dmg"
codesign --force --timestamp --sign "$MACOS_SIGN_IDENTITY" "$dmg"
xcrun notarytool submit "$dmg" --apple-id "$MACOS_NOTARY_APPLE_ID" \
  --team-id "$MACOS_NOTARY_TEAM_ID" --password "$MACOS_NOTARY_PASSWORD" --wait
xcrun stapler staple "$dmg"
spctl --assess --type open --context context:primary-signature --verbose "$dmg"
