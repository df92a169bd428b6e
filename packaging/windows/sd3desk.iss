; Inno Setup 6 script for sd3desk on Windows: a per-user install (no administrator rights) of the
; onedir bundle, a Start-menu entry, an uninstaller. A CUDA build of torch makes the bundle
; several GB, so the setup is split into pieces under 2 GiB each (DiskSpanning): setup.exe plus
; setup-1.bin, setup-2.bin, ... which must stay side by side.
;
; Compile (packaging/build_bundle.py does this on Windows):
;   iscc /DAppVersion=0.1.0 /DBundleDir=packaging\dist\sd3desk /DOutputDir=packaging\dist\installer packaging\windows\sd3desk.iss
; Silent install (CI's check):  sd3desk-0.1.0-setup.exe /VERYSILENT /SUPPRESSMSGBOXES /NORESTART /CURRENTUSER
;
; Images, settings and the queue live in the user's AppData (platformdirs), never in the install
; folder, so upgrading or uninstalling keeps them.

#ifndef AppVersion
  #define AppVersion "0.0.0"
#endif
#ifndef BundleDir
  #define BundleDir "..\dist\sd3desk"
#endif
#ifndef OutputDir
  #define OutputDir "..\dist\installer"
#endif

[Setup]
AppId={{6F1C7A52-3D0B-4B8E-9A57-5D3E2C1B8F40}
AppName=sd3desk
AppVersion={#AppVersion}
AppPublisher=sd3desk developers
AppPublisherURL=https://github.com/sd3desk/sd3desk
DefaultDirName={autopf}\sd3desk
DefaultGroupName=sd3desk
DisableProgramGroupPage=yes
PrivilegesRequired=lowest
PrivilegesRequiredOverridesAllowed=dialog
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
OutputDir={#OutputDir}
OutputBaseFilename=sd3desk-{#AppVersion}-setup
SetupIconFile=..\..\sd3desk\resources\icons\sd3desk.ico
UninstallDisplayIcon={app}\sd3desk.exe
UninstallDisplayName=sd3desk
Compression=lzma2/max
SolidCompression=no
DiskSpanning=yes
; 1.9 GB slices: under the 2 GiB a single file may have on many file systems and uploads.
DiskSliceSize=1900000000
WizardStyle=modern

[Files]
Source: "{#BundleDir}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{autoprograms}\sd3desk"; Filename: "{app}\sd3desk.exe"; WorkingDir: "{app}"
Name: "{autodesktop}\sd3desk"; Filename: "{app}\sd3desk.exe"; Tasks: desktopicon

[Tasks]
Name: "desktopicon"; Description: "Create a desktop shortcut"; Flags: unchecked

[Run]
Filename: "{app}\sd3desk.exe"; Description: "Start sd3desk"; Flags: nowait postinstall skipifsilent

[UninstallDelete]
; Only what the app writes next to itself (nothing, normally); user data is elsewhere.
Type: filesandordirs; Name: "{app}\__pycache__"
